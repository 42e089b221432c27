"""Duplicates: an exact copy and a resized, re-encoded copy are found; different images are not."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from test_clean_fixtures import pattern

from train.clean import dupes


@pytest.fixture
def data(tmp_path):
    """a, b, c, d: four different pictures; a copied byte for byte; b shrunk to 75 % and saved
    as a JPEG; two flat squares (red, blue) that dHash alone cannot tell apart; a broken file."""
    for label, names in {"cat": "ac", "dog": "bd"}.items():
        (tmp_path / label).mkdir()
        for n in names:
            pattern(ord(n), size=96).save(tmp_path / label / f"{n}.png")
    (tmp_path / "dog" / "a-copy.png").write_bytes((tmp_path / "cat" / "a.png").read_bytes())
    pattern(ord("b"), size=96).resize((72, 72), Image.Resampling.BILINEAR).save(
        tmp_path / "cat" / "b-small.jpg", quality=80)
    Image.new("RGB", (64, 64), (220, 30, 30)).save(tmp_path / "cat" / "red.png")
    Image.new("RGB", (64, 64), (30, 30, 220)).save(tmp_path / "dog" / "blue.png")
    (tmp_path / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return tmp_path


def paths(data) -> list[str]:
    return sorted(p.relative_to(data).as_posix() for p in data.rglob("*") if p.is_file())


def test_exact_and_near_copies_are_grouped_and_nothing_else(data):
    prints = dupes.scan(data, paths(data))
    groups = dupes.groups(prints)
    assert [(g["kind"], sorted(m["path"] for m in g["items"])) for g in groups] == [
        ("exact", ["cat/a.png", "dog/a-copy.png"]),
        ("near", ["cat/b-small.jpg", "dog/b.png"]),
    ]
    near = {m["path"]: m for m in groups[1]["items"]}
    assert near["dog/b.png"]["distance"] == 0  # the largest image comes first: the reference
    assert 0 <= near["cat/b-small.jpg"]["distance"] <= dupes.NEAR_BITS
    assert (near["dog/b.png"]["width"], near["cat/b-small.jpg"]["width"]) == (96, 72)
    assert all(m["identical"] for m in groups[0]["items"])
    [broken] = dupes.unreadable(prints)
    assert broken["path"] == "dog/broken.png" and "dog/broken.png" in broken["error"]


def test_flat_colours_share_a_dhash_but_not_a_group(data):
    red, blue = (dupes.fingerprint(data, p) for p in ("cat/red.png", "dog/blue.png"))
    assert red.dhash == blue.dhash == 0  # why the mean-colour check exists
    assert dupes.groups([red, blue]) == []


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_different_pictures_are_about_half_the_bits_apart(seed):
    a, b = (dupes.dhash(pattern(seed * 10 + k))[0] for k in (0, 1))
    assert bin(a ^ b).count("1") > 3 * dupes.NEAR_BITS


def test_a_rescan_reuses_the_cache_for_a_moved_file(data):
    cache: dict = {}
    dupes.scan(data, ["cat/c.png"], cache=cache)
    (data / "dog" / "c.png").parent.mkdir(exist_ok=True)
    (data / "cat" / "c.png").rename(data / "dog" / "c.png")
    [fp] = dupes.scan(data, ["dog/c.png"], cache=cache)
    assert fp.path == "dog/c.png" and len(cache) == 1


def test_dhash_reads_the_bits_left_to_right_top_to_bottom():
    """A 9x8 picture brighter to the right in the top row only: the top 8 bits are set."""
    a = np.zeros((8, 9), dtype=np.uint8)
    a[0] = np.arange(9) * 30
    bits, _ = dupes.dhash(Image.fromarray(a, "L").convert("RGB"))
    assert bits == 0xFF << 56
