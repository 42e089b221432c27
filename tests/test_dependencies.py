"""Every package that train/ and export/ import is declared: in their dependency group
(pyproject.toml's ``[dependency-groups]``) or among the wheel's own dependencies.

Read from the source with ``ast``, so a lazy import inside a function counts too; each module is
mapped to the distribution that installed it with ``importlib.metadata``. pandas was imported by
both and declared by neither until issue 16, working only because fastai happens to need it.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[1]
FIRST_PARTY = {"edge_infer", "train", "export", "benchmarks"}
# Imported only by one command, which says how to get it when it is missing.
OPTIONAL = {"sklearn": "python -m train make-data digits (scikit-learn, in the dev group)"}
# What each folder may use: export reads fastai's learner, so it needs the train group as well.
GROUPS = {"train": ("train",), "export": ("export", "train")}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared(groups: tuple[str, ...]) -> set[str]:
    """Distribution names the wheel's dependencies and these groups list (PEP 503 spelling)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    requirements = list(project["project"]["dependencies"])
    for group in groups:
        requirements += [r for r in project["dependency-groups"][group] if isinstance(r, str)]
    return {canonical(re.match(r"[A-Za-z0-9._-]+", r).group(0)) for r in requirements}  # type: ignore[union-attr]


def imports(folder: Path) -> dict[str, str]:
    """Top-level module -> the first file (relative) that imports it, absolute imports only."""
    found: dict[str, str] = {}
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], str(path.relative_to(ROOT)))
    return found


def undeclared(folder: str, names: set[str]) -> dict[str, str]:
    """Third-party modules that ``folder`` imports whose distribution is not in ``names``."""
    installed = importlib.metadata.packages_distributions()
    out = {}
    for module, where in imports(ROOT / folder).items():
        if module in sys.stdlib_module_names or module in FIRST_PARTY or module in OPTIONAL:
            continue
        dists = {canonical(d) for d in installed.get(module, [])}
        if not dists:
            out[module] = f"{where}: imports {module}, which no installed distribution provides"
        elif not dists & names:
            out[module] = f"{where}: imports {module} (from {', '.join(sorted(dists))}), declared nowhere"
    return out


@pytest.mark.parametrize("folder", sorted(GROUPS))
def test_every_import_is_declared(folder: str) -> None:
    assert undeclared(folder, declared(GROUPS[folder])) == {}


def test_the_check_can_fail() -> None:
    """Without its pandas line, export's pandas import is reported, with the file."""
    missing = undeclared("export", declared(GROUPS["export"]) - {"pandas"})
    assert set(missing) == {"pandas"} and missing["pandas"].startswith("export/")
