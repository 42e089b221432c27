"""The runtime's goldens (``tests/goldens.py``): pixels and a tiny model's probabilities, no torch.

The first test is the golden check itself; the others test the generator, so a golden that
holds means what it says: the inputs are what each case claims, a second run gives the same
file, and ``differences`` notices a moved hash or probability (and only beyond the tolerance).
"""

from __future__ import annotations

import copy
import io
import json

import pytest
from PIL import Image

from edge_infer.preprocess import load_image
from tests import goldens


@pytest.fixture(scope="module")
def fresh() -> dict:
    return goldens.generate()


def test_the_runtime_reproduces_its_goldens(fresh):
    stored = json.loads(goldens.GOLDENS.read_text())
    moved = goldens.differences(stored, fresh)
    assert moved == [], ("pixels or probabilities moved on this machine "
                         f"({fresh['made_on']}; the goldens were made on {stored['made_on']}):\n"
                         + "\n".join(moved) + "\nIf the change is intended: python -m tests.goldens --write")


def test_a_second_run_gives_the_same_goldens(fresh):
    assert goldens.generate() == fresh


def test_the_file_covers_each_resize_and_pad_mode_and_the_hard_decodes():
    cases = goldens.CASES
    assert {c.pre.resize for c in cases.values()} == {"crop", "squish", "pad"}
    assert {c.pre.pad_mode for c in cases.values() if c.pre.resize == "pad"} == {"zeros", "border", "reflection"}
    assert len(cases) >= 12 and all(c.image in goldens.inputs() for c in cases.values())


@pytest.mark.parametrize("name, mode, orientation", [
    ("photo.png", "RGB", None), ("exif-6.jpg", "RGB", 6), ("grey-16.png", "I;16", None),
    ("cmyk.jpg", "CMYK", None), ("rgba.png", "RGBA", None), ("large.jpg", "RGB", None),
])
def test_each_input_is_what_its_cases_claim(name, mode, orientation):
    with Image.open(io.BytesIO(goldens.inputs()[name])) as img:
        assert img.mode == mode
        assert img.getexif().get(0x0112) == orientation


def test_the_reduced_scale_case_really_decodes_at_reduced_scale():
    case = goldens.CASES["jpeg-reduced-scale"]
    assert case.fast_decode and not goldens.CASES["jpeg-full-decode"].fast_decode
    data = goldens.inputs()[case.image]
    assert load_image(data, draft_for=case.pre).size == (128, 96)  # libjpeg's 1/8 of 1024x768
    assert load_image(data).size == (1024, 768)


def test_cases_that_should_differ_do(fresh):
    hashes = {name: v["sha256"] for name, v in fresh["preprocess"].items()}
    assert len(set(hashes.values())) == len(hashes)


def test_differences_name_what_moved_beyond_the_tolerance(fresh):
    moved = copy.deepcopy(fresh)
    moved["preprocess"]["cmyk"]["sha256"] = "0" * 64
    moved["probabilities"]["crop"][0] += 10 * goldens.PROB_TOLERANCE
    moved["probabilities"]["squish"][0] += goldens.PROB_TOLERANCE / 10  # within: not reported
    lines = goldens.differences(fresh, moved)
    assert [line.split(":")[0] for line in lines] == ["preprocess cmyk", "probabilities crop"]


def test_write_then_check(tmp_path, capsys):
    path = tmp_path / "goldens.json"
    assert goldens.main(["--write", "--path", str(path)]) == 0
    assert goldens.main(["--path", str(path)]) == 0
    stored = json.loads(path.read_text())
    stored["inputs"]["photo.png"] = "f" * 64
    path.write_text(json.dumps(stored))
    assert goldens.main(["--path", str(path)]) == 1
    assert "inputs photo.png: stored ffff" in capsys.readouterr().err
