"""Pillow's warnings while decoding: one logged line naming the file, never a ``UserWarning``
with a source line on stderr, and attributed to the right file when decodes run in threads."""

from __future__ import annotations

import io
import logging
import struct
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, TiffImagePlugin

from edge_infer import Classifier
from edge_infer.preprocess import load_image, probe

SAID = "decoded, but Pillow says: Tag data larger than file. Skipping tag 270"


def tiff_with_a_bad_tag(path: Path) -> Path:
    """A good 8x8 TIFF whose ImageDescription claims 10,000 bytes: Pillow skips the tag, warns."""
    info = TiffImagePlugin.ImageFileDirectory_v2()
    info[270] = "a description long enough to be stored out of line"
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(buf, "TIFF", tiffinfo=info)
    data = bytearray(buf.getvalue())
    ifd = struct.unpack_from("<I", data, 4)[0]
    for i in range(struct.unpack_from("<H", data, ifd)[0]):
        entry = ifd + 2 + 12 * i
        if struct.unpack_from("<H", data, entry)[0] == 270:
            struct.pack_into("<I", data, entry + 4, 10_000)
    path.write_bytes(bytes(data))
    return path


@pytest.fixture
def bad_tiff(tmp_path) -> Path:
    return tiff_with_a_bad_tag(tmp_path / "bad tag.tif")


def said(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "edge_infer.preprocess"]


def test_a_bad_tag_is_one_logged_line_and_the_image_still_decodes(bad_tiff, caplog, capfd):
    with caplog.at_level(logging.WARNING), warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning that escaped would fail here
        img = load_image(bad_tiff)
    assert img.mode == "RGB" and img.getpixel((0, 0)) == (200, 10, 10)
    assert said(caplog) == [f"{bad_tiff}: {SAID}"]
    assert "UserWarning" not in capfd.readouterr().err


def test_probe_logs_it_the_same_way(bad_tiff, caplog):
    with caplog.at_level(logging.WARNING):
        assert probe(bad_tiff.read_bytes(), "upload.tif").size == (8, 8)
    assert said(caplog) == [f"upload.tif: {SAID}"]


def test_each_warning_goes_to_the_file_that_raised_it_across_threads(bad_tiff, tmp_path, caplog):
    good = tmp_path / "good.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(good)
    files = [bad_tiff, good] * 16
    before = (warnings.showwarning, list(warnings.filters))
    with caplog.at_level(logging.WARNING), ThreadPoolExecutor(8) as pool:
        assert len(list(pool.map(load_image, files))) == 32
    assert said(caplog) == [f"{bad_tiff}: {SAID}"] * 16
    assert (warnings.showwarning, list(warnings.filters)) == before  # the hook is gone again


def test_other_warnings_meanwhile_go_where_they_went(bad_tiff, caplog):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with caplog.at_level(logging.WARNING):
            load_image(bad_tiff)
        warnings.warn("not Pillow's", UserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["not Pillow's"]


def test_a_folder_run_logs_it_and_predicts(colour_model, bad_tiff, caplog):
    clf = Classifier.load(colour_model, threads=1)
    with caplog.at_level(logging.WARNING):
        [result] = list(clf.classify_files([bad_tiff]))
    assert result.prediction.label == "red" and said(caplog) == [f"{bad_tiff}: {SAID}"]
