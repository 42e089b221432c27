"""``edge-infer web``: a static folder that classifies photos in the visitor's browser.

The folder holds the page (the serve page's shell, stylesheet and ``page.js``, plus ``web.js`` and
``preprocess.js``), the model file unchanged (publishing the page publishes what ``edge-infer info
MODEL`` shows), its canaries as they are in ``canaries.json``, and ``manifest.json``: the metadata
the page needs, where onnxruntime-web is (a pinned CDN URL, or a copy in ``ort/`` for offline
sites) and ``edge-infer verify``'s tolerances, by which the page judges the canaries on load, so the
visitor sees whether this browser computes what export checked. Any static host serves it; photos
never leave the device. ``preprocess.js`` ports ``fit_to_size`` and Pillow's bilinear resize, so a
lossless image gives the Python runtime's uint8 tensor (``tests/test_web_browser.py`` checks it).
"""

from __future__ import annotations

import json
import os
import shutil
from importlib import resources
from pathlib import Path

from ._version import __version__
from .agreement import CONFIDENT_MARGIN
from .canaries import CANARIES_KEY
from .classifier import Classifier
from .errors import EdgeInferError
from .files import sha256_file
from .metadata import INPUT_NAME, OUTPUT_NAME
from .verify import FP32_MAX_DIFF, INT8_MAX_DIFF

__all__ = ["ORT_VERSION", "ORT_CDN", "ORT_FILES", "build_site", "ort_dist", "WebError"]

# The onnxruntime-web release the page is tested with (.ci/run installs the same one from npm).
ORT_VERSION = "1.31.1"
ORT_CDN = f"https://cdn.jsdelivr.net/npm/onnxruntime-web@{ORT_VERSION}/dist/"
# What the page loads from a dist: the WebAssembly build's module, its worker glue and the binary
# (SIMD + threads; with one thread it runs the same binary without workers).
ORT_FILES = ("ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
PAGE_FILES = ("web/web.js", "web/preprocess.js", "app.css", "page.js")  # in static/; the last two the serve page's
MANIFEST = "manifest.json"
CANARIES = "canaries.json"
# The page is the serve page's shell (static/index.html) with these swapped, each found once.
SHELL_SWAPS = (
    ('href="static/app.css"', 'href="app.css"'),
    ('src="static/app.js"', 'src="web.js"'),
    ("It is classified on this server; nothing leaves it.",
     "It is classified in this browser; the photo never leaves your device."),
    ("Without it, use <code>curl -F file=@photo.jpg http://HOST/predict</code>.",
     "It classifies photos with WebAssembly; turn JavaScript on to use it."),
)
TOP_K = 5


class WebError(EdgeInferError):
    """The site cannot be written: a bad ``--ort`` folder, an output folder that holds other files."""


def ort_dist(folder: str | os.PathLike) -> Path:
    """The folder with ``ORT_FILES`` in ``folder``: an npm package (``.../onnxruntime-web``), its
    ``dist/``, or a ``node_modules`` that holds it."""
    root = Path(folder)
    for candidate in (root, root / "dist", root / "onnxruntime-web" / "dist",
                      root / "node_modules" / "onnxruntime-web" / "dist"):
        if all((candidate / name).is_file() for name in ORT_FILES):
            return candidate
    raise WebError(f"{root}: no onnxruntime-web dist here (looked for {', '.join(ORT_FILES)}); "
                   f"npm install --prefix DIR onnxruntime-web@{ORT_VERSION}, then pass --ort DIR")


def build_site(model: str | os.PathLike, out: str | os.PathLike, *, ort: str = "cdn",
               title: str | None = None) -> Path:
    """Write the static site for ``model`` into ``out`` and return the manifest's path.

    ``ort``: ``"cdn"`` (the page imports onnxruntime-web ``ORT_VERSION`` from ``ORT_CDN``) or a
    folder holding an onnxruntime-web dist, copied into ``out/ort/``. ``out`` may be new, empty
    or an earlier site (it is rewritten); a folder with other files is refused.
    """
    model, out = Path(model), Path(out)
    clf = Classifier.load(model, threads=1)  # validates the file: graph, metadata and canaries agree
    info, meta = clf.info, clf.session.get_modelmeta().custom_metadata_map if clf.session else {}
    dist = None if ort == "cdn" else ort_dist(ort)
    _prepare_out(out)
    static = resources.files("edge_infer") / "static"
    (out / "index.html").write_text(web_shell((static / "index.html").read_text("utf-8")), "utf-8")
    for name in PAGE_FILES:
        (out / Path(name).name).write_bytes((static / name).read_bytes())
    shutil.copyfile(model, out / model.name)
    if CANARIES_KEY in meta:
        (out / CANARIES).write_text(meta[CANARIES_KEY])
    if dist is not None:
        (out / "ort").mkdir()
        for name in ORT_FILES:
            shutil.copyfile(dist / name, out / "ort" / name)
    manifest = {
        "format": "edge-infer-web", "version": 1, "edge_infer": __version__,
        "title": title or f"{model.stem}: {len(info.labels)} labels",
        "model": {"file": model.name, "bytes": model.stat().st_size, "sha256": sha256_file(model)},
        "input": INPUT_NAME, "output": OUTPUT_NAME,
        "labels": list(info.labels), "preprocess": info.preprocess.to_dict(), "precision": info.precision,
        "arch": info.provenance.get("arch"), "top_k": min(TOP_K, len(info.labels)),
        "ort": {"version": ORT_VERSION if dist is None else _dist_version(dist),
                "base": "ort/" if dist is not None else ORT_CDN},
        # edge-infer verify's rule (edge_infer.verify.check), which the page applies to canaries.json
        "canaries": CANARIES if CANARIES_KEY in meta else None,
        "verify": {"fp32_max_diff": FP32_MAX_DIFF, "int8_max_diff": INT8_MAX_DIFF,
                   "confident_margin": CONFIDENT_MARGIN},
    }
    path = out / MANIFEST
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    return path


def web_shell(shell: str) -> str:
    """The page's ``index.html``: the serve page's ``shell`` with ``SHELL_SWAPS`` made."""
    for old, new in SHELL_SWAPS:
        if shell.count(old) != 1:
            raise AssertionError(f"static/index.html: {old!r} is not there once; update SHELL_SWAPS")
        shell = shell.replace(old, new)
    return shell


def _dist_version(dist: Path) -> str | None:
    """The copied dist's version, from its npm package.json (None when it is not beside it)."""
    try:
        return str(json.loads((dist.parent / "package.json").read_text())["version"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _prepare_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise WebError(f"{out}: is a file; --out names a folder")
    if out.is_dir() and any(out.iterdir()) and not _is_site(out):
        raise WebError(f"{out}: holds other files; give a new or empty folder (or an earlier site)")
    # An earlier site: what this one may not rewrite goes (its model file, whatever it was called).
    for old in [*out.glob("*.onnx"), out / CANARIES]:
        old.unlink(missing_ok=True)
    shutil.rmtree(out / "ort", ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)


def _is_site(out: Path) -> bool:
    try:
        return json.loads((out / MANIFEST).read_text()).get("format") == "edge-infer-web"
    except (OSError, ValueError, AttributeError):
        return False
