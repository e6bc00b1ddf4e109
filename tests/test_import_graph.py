"""The package layers import one way (GUIDE.md section 2): a package imports only itself and
the packages listed above it. Checked by parsing every module's imports, so a lazy import
inside a function counts as much as one at the top."""

from __future__ import annotations

import ast
from pathlib import Path

import gcmr

# bottom to top; the shared pieces of the first row may import each other
LAYERS = [
    ["errors", "config", "artifacts", "runtime", "progress", "extras"],
    ["corpus"],
    ["encoders"],
    ["ids"],
    ["model"],
    ["search"],
    ["evaluate"],
    ["train"],
    ["bench", "serve"],
    ["cli"],
]
RANK = {name: i for i, row in enumerate(LAYERS) for name in row}
ROOT = Path(gcmr.__file__).parent


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def layering_violations() -> list[str]:
    bad = []
    for path in sorted(ROOT.rglob("*.py")):
        package = path.relative_to(ROOT).parts[0].removesuffix(".py")
        if package in ("__init__", "__main__"):
            continue
        assert package in RANK, f"{path}: package {package!r} has no place in LAYERS"
        for lineno, module in _imports(path):
            parts = module.split(".")
            if parts[0] != "gcmr" or len(parts) < 2 or parts[1] == package:
                continue
            target = parts[1]
            assert target in RANK, f"{path}:{lineno}: imports unknown package {module}"
            shared = RANK[target] == RANK[package] == 0
            if RANK[target] >= RANK[package] and not shared:
                bad.append(f"{path.relative_to(ROOT)}:{lineno} imports {module}")
    return bad


def test_every_package_imports_only_lower_layers() -> None:
    assert layering_violations() == []


def test_the_core_never_reaches_up_into_train_bench_or_cli() -> None:
    # the issue's own wording, kept as its own check
    core = ("search", "model", "ids", "corpus")
    for path in sorted(ROOT.rglob("*.py")):
        if path.relative_to(ROOT).parts[0] not in core:
            continue
        for lineno, module in _imports(path):
            assert not module.startswith(("gcmr.train", "gcmr.bench", "gcmr.cli")), \
                f"{path}:{lineno} imports {module}"


def test_the_checker_sees_a_violation(tmp_path: Path, monkeypatch) -> None:
    fake = tmp_path / "gcmr"
    (fake / "search").mkdir(parents=True)
    (fake / "search" / "x.py").write_text("def f():\n    from gcmr.train.loop import fit\n")
    monkeypatch.setattr(__import__(__name__), "ROOT", fake)
    assert layering_violations() == ["search/x.py:2 imports gcmr.train.loop"]
