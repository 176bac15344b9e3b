"""No user text is ever evaluated as code: the library calls no eval/exec/compile."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "cnndsl"
FORBIDDEN = {"eval", "exec", "compile", "__import__"}


def test_library_never_calls_eval_exec_or_compile() -> None:
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in FORBIDDEN:
                offenders.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {node.func.id}()")
    assert offenders == []


def test_library_never_unpickles_untrusted_files() -> None:
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                continue
            owner = node.func.value.id if isinstance(node.func.value, ast.Name) else ""
            keywords = {k.arg: k.value for k in node.keywords}
            if owner == "pickle" and node.func.attr in ("load", "loads"):
                offenders.append(f"{path.name}:{node.lineno}: pickle.{node.func.attr}")
            if owner == "torch" and node.func.attr == "load":
                weights_only = keywords.get("weights_only")
                if not (isinstance(weights_only, ast.Constant) and weights_only.value is True):
                    offenders.append(f"{path.name}:{node.lineno}: torch.load without weights_only=True")
            if owner == "np" and node.func.attr == "load":
                allow = keywords.get("allow_pickle")
                if isinstance(allow, ast.Constant) and allow.value is True:
                    offenders.append(f"{path.name}:{node.lineno}: np.load(allow_pickle=True)")
    assert offenders == []
