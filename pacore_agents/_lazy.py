"""Lazy re-exports for a package's ``__init__`` (PEP 562), so that importing the package, or one
small module in it (a grading worker imports only its own), does not import all of it.

One source of truth: the package's ``if TYPE_CHECKING:`` block of ``from .module import name``
lines, which type checkers and IDEs read as ordinary imports. ``attach`` reads that block from
the package's source (a few hundred microseconds, once) and returns the ``__getattr__`` and
``__dir__`` the package assigns. Contract: a public name is imported on its first access and
then cached in the package's namespace (later accesses are plain lookups); every name the block
imports is in the package's static ``__all__`` and back (``tests/test_lazy_exports.py``); an
unknown name raises ``AttributeError`` as a module without ``__getattr__`` would.
"""

from __future__ import annotations

import ast
import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


def type_checking_imports(init_file: str | Path) -> dict[str, str]:
    """``{public name: relative module}`` from the ``if TYPE_CHECKING:`` block of ``init_file``
    (``from ._config import RunConfig`` gives ``{"RunConfig": "._config"}``), in source order."""
    tree = ast.parse(Path(init_file).read_text(encoding="utf-8"), filename=str(init_file))
    exports: dict[str, str] = {}
    for node in tree.body:
        if not (isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"):
            continue
        for stmt in node.body:
            if isinstance(stmt, ast.ImportFrom) and stmt.level > 0:
                module = "." * stmt.level + (stmt.module or "")
                exports.update({alias.asname or alias.name: module for alias in stmt.names})
    return exports


def attach(package: str, init_file: str) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of ``package``, whose ``__init__`` is ``init_file``."""
    exports: dict[str, str] | None = None

    def __getattr__(name: str) -> Any:
        nonlocal exports
        if exports is None:
            exports = type_checking_imports(init_file)
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        namespace = vars(sys.modules[package])
        return sorted(set(namespace) | set(namespace.get("__all__", ())))

    return __getattr__, __dir__
