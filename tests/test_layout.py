"""The package's shape: layers import only the layers below them; modules and functions stay short."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "seqdni"
# Each layer and what it may import from seqdni besides itself (docs/architecture.md).
ALLOWED = {
    "dni": set(),
    "data": set(),
    "nets": {"data"},
    "engines": {"dni", "data", "nets"},
    "training": {"dni", "data", "nets", "engines"},
    "cli": {"dni", "data", "nets", "engines", "training"},
}
FOUNDATION = {"errors"}  # seqdni/errors.py: every layer may import it; it imports nothing from seqdni


def seqdni_imports(path: Path) -> set[str]:
    """The seqdni layers a module imports (`seqdni.<layer>...`), including imports inside functions."""
    layers = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else []
        for name in names:
            parts = name.split(".")
            if parts[0] == "seqdni" and len(parts) > 1:
                layers.add(parts[1])
    return layers


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_a_layer_imports_only_the_layers_below_it(layer):
    for path in sorted((PACKAGE / layer).rglob("*.py")):
        bad = seqdni_imports(path) - ALLOWED[layer] - FOUNDATION - {layer}
        assert not bad, f"{path.relative_to(PACKAGE.parent)} imports seqdni.{', seqdni.'.join(sorted(bad))}"


def test_networks_and_engines_import_neither_lightning_nor_tokenizers():
    """`seqdni.nets` and `seqdni.engines` are plain PyTorch: a fresh interpreter importing them loads no
    Lightning and no tokenizers (which `seqdni.data`'s package imports with its data modules)."""
    heavy = ("lightning", "lightning_fabric", "pytorch_lightning", "tokenizers")
    code = (f"import sys, seqdni.nets, seqdni.engines; "
            f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({heavy!r})))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PACKAGE.parent)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]", f"importing seqdni.nets and seqdni.engines loaded {run.stdout.strip()}"
    # what the networks hold instead of importing it agrees with the data
    from seqdni.data.digits import DIGITS
    from seqdni.nets.twonets import SYMBOLS
    assert SYMBOLS == len(DIGITS)


def test_every_module_is_in_a_layer():
    loose = {p.name for p in PACKAGE.glob("*.py")} - {"__init__.py", "train.py", "sample.py", "pipeline.py", "errors.py"}
    assert not loose, f"modules outside the layers: {sorted(loose)}"
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and not p.name.startswith("_")}
    assert folders == set(ALLOWED) | {"configs"}  # configs/: YAML only, installed with the package
    assert not seqdni_imports(PACKAGE / "errors.py")


def test_modules_and_functions_stay_short():
    """No module over 300 lines, no function over 40 (docstrings included)."""
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        assert len(text.splitlines()) <= 300, f"{path.relative_to(PACKAGE.parent)}: {len(text.splitlines())} lines"
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = node.end_lineno - node.lineno + 1
                assert n <= 40, f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name}() is {n} lines"
