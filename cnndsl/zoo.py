"""The model zoo: the `.cnn` files that ship with cnndsl, found by name (`resnet50`).

The wheel carries them as `cnndsl/architectures/`; a source checkout keeps them in
`architectures/` at the top of the repository. A path that exists always wins over a zoo name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_ZOO_NAME = re.compile(r"[A-Za-z0-9_]+")


def zoo_dir() -> Path:
    """The folder of the zoo's `.cnn` files, in the installed package or in a source checkout."""
    # Looked up beside this module rather than through importlib.resources, whose import alone
    # costs `cnndsl check` several milliseconds; the wheel installs the package as plain files.
    package = Path(__file__).resolve().parent
    packaged = package / "architectures"
    return packaged if packaged.is_dir() else package.parent / "architectures"


def names() -> list[str]:
    """Every zoo network's name (its file's stem), sorted."""
    folder = zoo_dir()
    return sorted(path.stem for path in folder.glob("*.cnn")) if folder.is_dir() else []


def find(name_or_path: str) -> Path | None:
    """The zoo file for `name_or_path` (`resnet50` or `resnet50.cnn`), unless it names an existing path."""
    if Path(name_or_path).exists():
        return None
    stem = name_or_path.removesuffix(".cnn")
    if not _ZOO_NAME.fullmatch(stem):
        return None
    path = zoo_dir() / f"{stem}.cnn"
    return path if path.is_file() else None


def missing_hint(name_or_path: str) -> str:
    """What to say when `name_or_path` is neither a file nor a zoo name."""
    import difflib

    close = difflib.get_close_matches(Path(name_or_path).stem, names(), n=1)
    suggestion = f"did you mean the zoo network `{close[0]}`? " if close else ""
    return f"{suggestion}`cnndsl zoo` lists the networks that ship with cnndsl"


@dataclass(frozen=True)
class ZooEntry:
    name: str
    description: str
    path: Path


def entries() -> list[ZooEntry]:
    """The zoo with each file's one-line description (its first comment, after the file name)."""
    out = []
    for name in names():
        path = zoo_dir() / f"{name}.cnn"
        out.append(ZooEntry(name, _description(path.read_text(encoding="utf-8")), path))
    return out


def _description(text: str) -> str:
    """`# resnet18.cnn — He et al. ...` -> `He et al. ...`: the leading comment up to its first full stop."""
    words: list[str] = []
    for line in text.splitlines()[:4]:
        if not line.startswith("#"):
            break
        words.append(line.lstrip("#").strip())
        if words[-1].endswith(".") or not words[-1]:
            break
    first = " ".join(w for w in words if w)
    first = re.sub(r"^\S+\.cnn\s*[—-]+\s*", "", first)
    return first.rstrip(":").strip()
