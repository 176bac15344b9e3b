"""The front end is one-way: backends read the IR and never import the parser or the checker."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "cnndsl"
FRONT_END = {"cnndsl.frontend", "cnndsl.parser", "cnndsl.checker", "cnndsl._parse_tables", "cnndsl.syntax", "lark"}
"""What turns text into a checked network (and the parsing library it needs)."""
DRIVERS = {"cnndsl", "cnndsl.__main__", "cnndsl.cli"}
"""The entry points: they call the front end, then a backend."""


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def in_front_end(name: str) -> bool:
    return any(name == front or name.startswith(front + ".") for front in FRONT_END)


def backend_modules() -> list[str]:
    names = [module_name(path) for path in sorted(PACKAGE.rglob("*.py"))]
    return [name for name in names if not in_front_end(name) and name not in DRIVERS]


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports at run time, at the top or inside a function (absolute names).

    Imports under `if TYPE_CHECKING:` are left out: they name types and never run."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    pending: list[ast.AST] = [ast.parse(path.read_text(encoding="utf-8"))]
    while pending:
        node = pending.pop()
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            pending.extend(node.orelse)
            continue
        pending.extend(ast.iter_child_nodes(node))
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(part for part in (base, node.module or "") if part)
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def test_the_lists_name_real_modules() -> None:
    names = {module_name(path) for path in PACKAGE.rglob("*.py")}
    assert {"cnndsl.frontend", "cnndsl.parser", "cnndsl.network", "cnndsl.codegen_torch"} <= names
    assert any(name.startswith("cnndsl.checker") for name in names)
    assert "cnndsl.network" in backend_modules() and "cnndsl.torch_plan" in backend_modules()


@pytest.mark.parametrize("name", backend_modules())
def test_no_backend_imports_the_front_end(name: str) -> None:
    path = PACKAGE.joinpath(*name.split(".")[1:])
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    assert not sorted(m for m in imported_modules(path) if in_front_end(m)), f"{name} imports the front end"


def test_backends_import_with_the_front_end_blocked() -> None:
    """Importing every backend module loads neither Lark nor the parser nor the checker."""
    blocked = sorted(FRONT_END)
    program = (
        "import importlib, importlib.abc, sys\n"
        f"BLOCKED = {blocked!r}\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if any(name == b or name.startswith(b + '.') for b in BLOCKED):\n"
        "            raise ImportError('front end imported: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        # the package's __init__ is a driver (it offers cnndsl.parse): stand it in with a bare package
        "import types\n"
        f"package = types.ModuleType('cnndsl'); package.__path__ = [{str(PACKAGE)!r}]\n"
        "package.__version__ = 'test'\n"
        "sys.modules['cnndsl'] = package\n"
        f"for name in {backend_modules()!r}:\n"
        "    importlib.import_module(name)\n"
        "assert not [n for n in sys.modules if any(n == b or n.startswith(b + '.') for b in BLOCKED)]\n"
    )
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]


def test_network_imports_only_the_ir_errors_and_shapes() -> None:
    """`network.py` at import time: the IR, errors, shapes (and summary's defaults); the rest lazily."""
    tree = ast.parse((PACKAGE / "network.py").read_text(encoding="utf-8"))
    top_level = {node.module for node in tree.body if isinstance(node, ast.ImportFrom) and node.level}
    assert top_level <= {"errors", "ir", "shapes", "summary"}, top_level
