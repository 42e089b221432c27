"""``edge_infer.agreement``: the one definition of top-1 agreement, flips and "confident"."""

from __future__ import annotations

import numpy as np
import pytest

from edge_infer.agreement import CONFIDENT_MARGIN, compare, top2_margin, wilson_lower


def test_wilson_lower_bound_matches_the_formula_and_its_limits():
    assert wilson_lower(0, 0) == 0.0 and wilson_lower(0, 10) == 0.0
    assert wilson_lower(597, 600) == pytest.approx(0.98544, abs=1e-4)   # 99.5 % of 600
    assert wilson_lower(600, 600) == pytest.approx(0.99364, abs=1e-4)
    assert wilson_lower(18, 18) == pytest.approx(0.8241, abs=1e-3)     # small sets bound weakly


def test_top2_margin_is_top1_minus_top2():
    probs = np.array([[0.7, 0.2, 0.1], [0.3, 0.3, 0.4]], np.float32)
    np.testing.assert_allclose(top2_margin(probs), [0.5, 0.1], atol=1e-6)


def test_agreement_counts_confident_predictions_apart() -> None:
    reference = np.array([[0.9, 0.1], [0.52, 0.48], [0.2, 0.8]], np.float32)
    other = np.array([[0.8, 0.2], [0.49, 0.51], [0.3, 0.7]], np.float32)
    a = compare(reference, other)
    assert (a.images, a.top1_same, a.confident, a.confident_same) == (3, 2, 2, 2)
    assert (a.flipped, a.near_tie_flips, a.confident_flips) == ((1,), 1, 0)
    assert a.margin == CONFIDENT_MARGIN and a.max_abs_prob_diff == pytest.approx(0.1, abs=1e-6)
    assert a.reference_margin_min == pytest.approx(0.04, abs=1e-6)
    flipped = compare(reference, other[:, ::-1])
    assert flipped.confident_same == 0 and flipped.confident_flips == 2  # the check can fail


def test_agreement_to_dict_is_json_ready_with_the_derived_counts() -> None:
    import json

    a = compare(np.array([[0.9, 0.1]], np.float32), np.array([[0.1, 0.9]], np.float32))
    d = json.loads(json.dumps(a.to_dict()))
    assert d["flipped"] == [0] and d["confident_flips"] == 1 and d["top1_agreement"] == 0.0
    assert d["lower95"] == 0.0 and d["margin"] == CONFIDENT_MARGIN


def test_unequal_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="equal shapes"):
        compare(np.zeros((2, 3)), np.zeros((2, 4)))
