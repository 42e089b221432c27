"""``preprocess.probe``: an upload's header read once, before any pixel is decoded.

What ``edge-infer serve`` admits an upload by: 415 for bytes in no image format (``NotAnImage``),
400 for a broken header (``ImageError``), and the decode-memory estimate its budget reserves.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from edge_infer.errors import ImageError, NotAnImage
from edge_infer.preprocess import load_image, probe


def encoded(array: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, fmt)
    return buf.getvalue()


@pytest.mark.parametrize("array, fmt, mode, per_pixel", [
    (np.zeros((30, 40, 3), np.uint8), "PNG", "RGB", 3 + 0 + 3),
    (np.zeros((30, 40), np.uint8), "JPEG", "L", 1 + 0 + 3),
    (np.zeros((30, 40), np.uint16), "PNG", "I;16", 2 + 1 + 3),  # the 8-bit grey copy counts too
])
def test_the_header_says_format_size_mode_and_decode_memory(array, fmt, mode, per_pixel):
    data = encoded(array, fmt)
    p = probe(data, "photo")
    assert (p.name, p.data, p.format, p.size, p.mode) == ("photo", data, fmt, (40, 30), mode)
    assert p.decode_bytes == 40 * 30 * per_pixel * 5 // 4
    assert "data" not in repr(p)  # a 20 MB upload is not printed with it


def test_a_small_file_that_decodes_huge_says_so_from_its_header():
    data = encoded(np.zeros((3000, 3000), np.uint16), "PNG")
    assert len(data) < 100_000 and probe(data, "bomb.png").decode_bytes > 64 << 20


def test_bytes_in_no_image_format_are_not_an_image():
    with pytest.raises(NotAnImage, match="^notes.txt: not an image"):
        probe(b"hello, server", "notes.txt")
    with pytest.raises(NotAnImage):  # the decoder says the same: one error for one problem
        load_image(b"hello, server")


def bmp_of_depth_7() -> bytes:
    bmp = bytearray(encoded(np.zeros((4, 4, 3), np.uint8), "BMP"))
    bmp[28] = 7  # bits per pixel: a BMP, but not one that can be decoded
    return bytes(bmp)


@pytest.mark.parametrize("data, words", [(b"", "empty"), (bmp_of_depth_7(), "corrupt image header")],
                         ids=["empty", "bmp-of-7-bits"])
def test_an_empty_or_broken_header_is_an_image_error_not_a_format_question(data, words):
    with pytest.raises(ImageError, match=words) as caught:
        probe(data, "upload")
    assert not isinstance(caught.value, NotAnImage)
