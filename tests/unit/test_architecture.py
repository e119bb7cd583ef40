"""The layout is a contract: layers import one way, no import circle, no file too long to read.

import-linter (.importlinter) checks the packages under helpers/; it cannot read the top-level
modules' own imports (it takes packages only), so this file reads every project module's imports
with `ast`, including imports inside functions, and checks the whole graph."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOP_LEVEL = ("app", "handlers", "lightning", "database", "models")
# Highest first. A module may import modules of a lower layer, and modules of its own package.
LAYERS = (
    ("app",),
    ("helpers.web",),
    ("handlers",),
    ("helpers.ussd",),
    ("helpers.wallet",),
    ("helpers.mpesa", "helpers.lightning", "helpers.prices", "helpers.airtime", "helpers.simswap", "helpers.idcheck"),
    ("lightning",),
    ("database",),
    ("helpers.infra",),
    ("models",),
)
MAX_LINES = 500  # the reshaping issue's bound for any source file
MAX_HANDLERS_LINES = 400  # handlers.py: handle_ussd and the screen table


def project_modules() -> dict[str, Path]:
    found = {name: ROOT / f"{name}.py" for name in TOP_LEVEL}
    for path in (ROOT / "helpers").rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _type_checking_block(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imports_of(path: Path, modules: dict[str, Path]) -> set[str]:
    """Project modules `path` imports at run time (at any depth; not under `if TYPE_CHECKING`)."""
    tree = ast.parse(path.read_text())
    skipped = {id(n) for block in ast.walk(tree) if _type_checking_block(block) for n in ast.walk(block)}
    names: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
            names.add(node.module)
    found = set()
    for name in names:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        if name:
            found.add(name)
    return found


def graph() -> dict[str, set[str]]:
    modules = project_modules()
    edges = {name: imports_of(path, modules) - {name} for name, path in modules.items()}
    for name in modules:  # a submodule's import runs its packages' __init__ first: no edge to count
        edges[name] = {target for target in edges[name] if not name.startswith(target + ".")}
    return edges


def layer_of(module: str) -> int:
    for rank, members in enumerate(LAYERS):
        if any(module == m or module.startswith(m + ".") for m in members):
            return rank
    raise AssertionError(f"{module} is in no layer: add it to LAYERS and to the README's layout")


def package_of(module: str) -> str:
    return ".".join(module.split(".")[:2]) if module.startswith("helpers.") else module


def test_every_import_goes_down_a_layer_or_stays_in_its_package():
    wrong = []
    for source, targets in graph().items():
        if source == "helpers":
            continue
        for target in targets:
            if target == "helpers" or package_of(source) == package_of(target):
                continue
            if layer_of(target) <= layer_of(source):
                wrong.append(f"{source} -> {target}")
    assert wrong == [], "imports against the layers: " + ", ".join(sorted(wrong))


def test_no_import_circle_anywhere():
    edges = graph()
    index, low, stack, on_stack, circles, counter = {}, {}, [], set(), [], [0]

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in edges.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    assert circles == []


def test_the_architecture_check_sees_a_circle_and_an_upward_import(tmp_path, monkeypatch):
    """The checks above can fail: a module importing upward is found, both ways it can be written."""
    modules = project_modules()
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from helpers.wallet.ledger import movements\n    import handlers\n")
    assert imports_of(probe, modules) == {"helpers.wallet.ledger.movements", "handlers", "helpers.wallet.ledger"}
    assert layer_of("handlers") < layer_of("helpers.wallet.ledger.movements")
    probe.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import handlers\n")
    assert imports_of(probe, modules) == set()


@pytest.mark.skipif(shutil.which("lint-imports", path=str(Path(sys.executable).parent)) is None,
                    reason="import-linter is not installed (requirements-dev.txt)")
def test_import_linter_contracts_are_kept():
    result = subprocess.run([str(Path(sys.executable).parent / "lint-imports"), "--no-cache"], cwd=ROOT,  # noqa: S603
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "broken" in result.stdout and " 0 broken" in result.stdout


def test_no_source_file_is_too_long_to_read():
    sources = [*project_modules().values(), ROOT / "test_ussd.py", ROOT / "gunicorn.conf.py"]
    long = {str(p.relative_to(ROOT)): n for p in sources if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}
    assert len((ROOT / "handlers.py").read_text().splitlines()) < MAX_HANDLERS_LINES


def test_app_py_only_builds_the_app():
    """Routes live in blueprints (helpers/web/): app.py decorates no function as a route or command."""
    tree = ast.parse((ROOT / "app.py").read_text())
    decorated = [node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
                 and any(isinstance(d, ast.Call | ast.Attribute) for d in node.decorator_list)]
    assert decorated == []


@pytest.mark.skipif(shutil.which("mypy", path=str(Path(sys.executable).parent)) is None,
                    reason="mypy is not installed (requirements-dev.txt)")
def test_mypy_passes():
    result = subprocess.run([str(Path(sys.executable).parent / "mypy")], cwd=ROOT,  # noqa: S603
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:]
