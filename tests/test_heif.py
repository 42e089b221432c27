"""Phone photos: HEIC/HEIF (the ``heif`` extra, pillow-heif) and AVIF (Pillow's own) wherever images
are read, and the other formats Pillow decodes in the folder walk.

Every file is made here with Pillow / pillow-heif themselves, with EXIF rotations; nothing is
downloaded. HEIC/AVIF are lossy, so pixel checks compare against the rotated original with a mean
tolerance; labels come from solid colours, which no codec moves across a class boundary.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import tiny_models
from click.testing import CliRunner
from PIL import Image, features

from edge_infer import Classifier, find_images
from edge_infer.cli import cli
from edge_infer.files import IMAGE_SUFFIXES
from edge_infer.preprocess import HEIF_EXTRA_HINT, load_image
from export.train_config import TrainConfig

pytest.importorskip("pillow_heif")
if not features.check("avif"):
    pytest.skip("this Pillow was built without libavif", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[1]
ORIENTATION = 0x0112
# EXIF orientation -> the transpose that shows the stored pixels upright (ImageOps.exif_transpose's table)
UPRIGHT = {1: None, 3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_270, 8: Image.Transpose.ROTATE_90}


def save_rotated(path: Path, pixels: np.ndarray, orientation: int) -> Path:
    """``pixels`` as stored, with an EXIF orientation tag, in the format the suffix names."""
    path.parent.mkdir(parents=True, exist_ok=True)
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    Image.fromarray(pixels).save(path, exif=exif.tobytes(), quality=95)
    return path


def upright(pixels: np.ndarray, orientation: int) -> np.ndarray:
    turn = UPRIGHT[orientation]
    img = Image.fromarray(pixels)
    return np.asarray(img if turn is None else img.transpose(turn))


@pytest.fixture(scope="module")
def phone_folder(tmp_path_factory) -> Path:
    """DATA/<colour>/*.heic|*.avif, one per EXIF rotation, 40x30 as stored."""
    data = tmp_path_factory.mktemp("phone")
    for colour in tiny_models.COLOURS:
        for i, orientation in enumerate((1, 3, 6, 8)):
            suffix = ".heic" if i % 2 == 0 else ".avif"
            save_rotated(data / colour / f"{colour}{i}{suffix}", tiny_models.solid(colour), orientation)
    return data


def two_tone(w: int = 40, h: int = 30) -> np.ndarray:
    """Left half red, right half blue, a white top band: every rotation and mirror differs."""
    a = np.zeros((h, w, 3), np.uint8)
    a[:, : w // 2, 0] = 255
    a[:, w // 2:, 2] = 255
    a[: h // 3] = 255
    return a


@pytest.mark.parametrize("suffix", [".heic", ".avif"])
@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_load_image_shows_the_photo_upright(tmp_path, suffix, orientation):
    stored = two_tone()
    path = save_rotated(tmp_path / f"photo{suffix}", stored, orientation)
    got = np.asarray(load_image(path)).astype(int)
    want = upright(stored, orientation).astype(int)
    assert got.shape == want.shape
    assert np.abs(got - want).mean() < 8  # lossy codecs; a wrong turn is ~100 off


def test_find_images_walks_phone_formats_and_every_pillow_format(tmp_path, phone_folder):
    walked = {p.suffix for p in find_images(phone_folder, recursive=True)}
    assert walked == {".heic", ".avif"}
    extra = tmp_path / "more"
    extra.mkdir()
    for suffix in (".qoi", ".pcx", ".heif", ".sgi", ".msp", ".xbm"):
        Image.fromarray(tiny_models.solid("red")).convert("1" if suffix in (".msp", ".xbm") else "RGB") \
            .save(extra / f"x{suffix}")
    (extra / "notes.txt").write_text("not an image")
    found = find_images(extra)
    assert [p.suffix for p in found] == sorted([".qoi", ".pcx", ".heif", ".sgi", ".msp", ".xbm"],
                                                key=lambda s: "x" + s)
    for p in found:
        assert load_image(p).size == (40, 30)


def test_every_listed_suffix_has_a_reader():
    Image.init()
    readable = {ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN or fmt == "MPO"}
    assert IMAGE_SUFFIXES - readable <= {".heic", ".heif", ".hif"}  # pillow-heif registers no suffixes


def test_predict_cli_reads_heic_and_avif(colour_model, phone_folder):
    result = CliRunner().invoke(cli, ["predict", str(colour_model), str(phone_folder), "--recursive",
                                      "--format", "csv"])
    assert result.exit_code == 0, result.output
    rows = [line.split(",") for line in result.stdout.strip().splitlines()[1:]]
    assert len(rows) == 12
    assert all(Path(path).parent.name == label for path, label, *_ in rows)


def test_eval_scores_a_heic_avif_folder(colour_model, phone_folder):
    result = CliRunner().invoke(cli, ["eval", str(colour_model), str(phone_folder)])
    assert result.exit_code == 0, result.output
    assert "accuracy  1.0000 (12 of 12)" in result.stdout


def test_classifier_reads_heic_bytes(colour_model, phone_folder):
    clf = Classifier.load(colour_model, threads=1)
    path = next(phone_folder.glob("green/*.heic"))
    assert clf.predict(path.read_bytes()).label == "green"


def run_without(blocked: tuple[str, ...], code: str) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter in which importing ``blocked`` fails, as on a machine
    without them."""
    script = textwrap.dedent(f"""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name in {blocked!r} or name.split(".")[0] in {blocked!r}:
                    raise ImportError("blocked by the test")
        sys.meta_path.insert(0, Block())
    """) + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)


def predict_without(blocked: tuple[str, ...], model: Path, *paths: Path) -> subprocess.CompletedProcess:
    """``edge-infer predict`` where importing ``blocked`` fails."""
    return run_without(blocked, f"""
        from edge_infer.cli import main
        sys.argv = ["edge-infer", "predict", {str(model)!r}, *{[str(p) for p in paths]!r}]
        main()
    """)


def test_without_the_extra_heic_gets_one_line_naming_it(colour_model, phone_folder):
    heic = next(phone_folder.glob("red/*.heic"))
    avif = next(phone_folder.glob("red/*.avif"))
    done = predict_without(("pillow_heif",), colour_model, heic, avif)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"{heic}: a HEIC/HEIF image; reading it needs the heif extra: {HEIF_EXTRA_HINT}",
        "1 of 2 images failed"], done.stderr
    assert "red" in done.stdout and avif.name in done.stdout  # AVIF is Pillow's own: still read


def test_serve_answers_a_heic_without_the_extra_with_the_line_naming_it(colour_model, phone_folder):
    """Over real HTTP on 127.0.0.1: the probe of the upload's header names the extra, not "not an
    image" (415), so a phone's upload tells whoever runs the server what to install."""
    heic = next(phone_folder.glob("red/*.heic"))
    pytest.importorskip("starlette")
    done = run_without(("pillow_heif",), f"""
        import json, urllib.error, urllib.request
        sys.path.insert(0, "tests")
        from asgi_server import running
        from edge_infer import Classifier
        from edge_infer.serve import create_app
        with running(create_app(Classifier.load({str(colour_model)!r}, threads=1))) as url:
            request = urllib.request.Request(url + "/predict", data=open({str(heic)!r}, "rb").read(),
                                             method="POST", headers={{"Content-Type": "image/heic"}})
            try:
                urllib.request.urlopen(request, timeout=30)
            except urllib.error.HTTPError as e:
                print(json.dumps([e.code, json.loads(e.read())]))
    """)
    assert json.loads(done.stdout) == [400, {"error": f"upload: a HEIC/HEIF image; reading it needs the heif extra: "
                                                      f"{HEIF_EXTRA_HINT}"}], done.stderr


def test_a_pillow_without_avif_says_so(colour_model, phone_folder):
    avif = next(phone_folder.glob("red/*.avif"))
    done = predict_without(("PIL.AvifImagePlugin",), colour_model, avif)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[0].startswith(
        f"{avif}: an AVIF image, and this Pillow {Image.__version__} was built without AVIF support"), done.stderr


@pytest.mark.torch
@pytest.mark.slow
def test_a_folder_of_heic_and_avif_photos_trains_exports_and_serves(tmp_path):
    """export's own shapes, saved as HEIC and AVIF with EXIF rotations: train.fit (a tiny ResNet18
    from random weights), then python -m export's file tier (fastai's pipeline vs edge_infer on
    every validation file), then the exported file on a rotated photo through the serve app."""
    pytest.importorskip("fastai")
    from test_export import export_cli, make_shapes

    from train.fit import fit

    jpegs = make_shapes(tmp_path / "jpeg", per_class=12)
    data = tmp_path / "phone"
    for i, path in enumerate(sorted(jpegs.rglob("*.jpg"))):
        orientation = (1, 3, 6, 8)[i % 4]
        pixels = np.asarray(Image.open(path))
        stored = pixels if UPRIGHT[orientation] is None else np.asarray(  # stored turned, shown upright
            Image.fromarray(pixels).transpose(_INVERSE[orientation]))
        save_rotated(data / path.parent.name / f"{path.stem}{'.heic' if i % 2 else '.avif'}", stored, orientation)
    assert len(find_images(data, recursive=True)) == 36
    run = fit(data, tmp_path / "run", TrainConfig(arch="resnet18", size=32, epochs=2, freeze_epochs=0, lr=1e-2,
                                                  bs=8, pretrained=False, seed=42))
    out = tmp_path / "shapes.onnx"
    done = export_cli(run, "--out", out)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "parity.json").read_text())
    assert report["files"]["passed"] and report["files"]["top1_agreement"] == 1.0
    assert report["files"]["files"] > 0 and report["files"]["max_prob_diff"] <= 1e-3

    pytest.importorskip("starlette")
    from asgi_server import running

    from edge_infer.serve import create_app

    clf = Classifier.load(out, threads=1)
    photo = next(data.rglob("*.heic"))
    with running(create_app(clf)) as url:  # a raw image body, over real HTTP on 127.0.0.1
        request = urllib.request.Request(url + "/predict", data=photo.read_bytes(), method="POST",
                                         headers={"Content-Type": "image/heic"})
        answer = json.loads(urllib.request.urlopen(request, timeout=30).read())
    assert answer["label"] == clf.predict(photo).label


# the transpose that stores an upright image so that EXIF `orientation` shows it upright again
_INVERSE = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}


def test_verify_reads_heic_and_avif_and_quarantines_only_a_broken_one(phone_folder, tmp_path):
    """``python -m train verify``'s decoding step: HEIC/AVIF photos pass, a truncated HEIC is set aside."""
    pytest.importorskip("tqdm")
    import shutil

    from train.verify import check_files

    data = tmp_path / "data"
    shutil.copytree(phone_folder, data)
    broken = data / "red" / "broken.heic"
    broken.write_bytes(next(phone_folder.glob("red/*.heic")).read_bytes()[:200])
    moved = check_files(find_images(data, recursive=True), data)
    assert [m.path for m in moved] == ["red/broken.heic"]
    assert len(find_images(data, recursive=True)) == 12
