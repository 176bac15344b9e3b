"""Modules loaded on first use: `cnndsl check` never pays for NumPy (or the kernels) it does not run."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class LazyModule(ModuleType):
    """Stands for a module and imports it at the first attribute access.

    The real module's attributes are then copied in, so later lookups are plain
    attribute reads with no indirection (the kernels look up `np.*` in hot loops).
    """

    def __init__(self, target: str) -> None:
        super().__init__(target)
        self._target = target

    def __getattr__(self, attr: str) -> Any:
        module = importlib.import_module(self._target)
        self.__dict__.update(module.__dict__)
        return getattr(module, attr)


numpy = LazyModule("numpy")
numpy_ops = LazyModule("cnndsl.numpy_ops")
