"""The import layering: the core (pretrain/) imports no stage and nothing above
the stages; a stage imports the core, never another stage."""

import ast
from pathlib import Path

import pytest

from conftest import REPO

STAGES = ("classification", "segmentation", "detection")
ABOVE = ("suite", "studies", "tools")
FORBIDDEN = {
    "pretrain": set(STAGES) | set(ABOVE),
    **{stage: (set(STAGES) - {stage}) | set(ABOVE) for stage in STAGES},
}


def imported_packages(path: Path) -> set[str]:
    """Top-level packages named by every import statement of ``path``, wherever it
    sits (lazy imports inside functions count)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def layering_violations(package: str, root: Path = REPO) -> list[str]:
    return [
        f"{path.relative_to(root)} imports {name}"
        for path in sorted((root / package).rglob("*.py"))
        for name in sorted(imported_packages(path) & FORBIDDEN[package])
    ]


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_only_layers_below(package):
    assert layering_violations(package) == []


def test_the_check_sees_a_lazy_import_of_a_stage(tmp_path):
    core = tmp_path / "pretrain"
    core.mkdir()
    (core / "ok.py").write_text("import torch\nfrom pretrain.models import SdAE\n")
    (core / "bad.py").write_text("def f():\n    from classification.data import ImageNetClassification\n")
    assert layering_violations("pretrain", tmp_path) == ["pretrain/bad.py imports classification"]
