"""Refuse to start a child process from a script's unguarded top-level code, in one line.

vLLM starts its engine core, and studies their grading workers, with multiprocessing's
``spawn``: the child re-imports the parent's main script. A script that calls the library at
its top level without ``if __name__ == "__main__":`` would then run again in the child, which
multiprocessing stops with a bootstrap error: a child traceback and vLLM's own, ~240 lines in
all. ``check_main_guard`` finds that case in the parent, before any child exists, and raises
``MainGuardError`` (a ``ConfigError``) saying what to write. Left uncaught, as it is at a
script's top level, it prints as that one line: the hook it installs shows this error (alone
or as the leaf of an exception group) without a traceback and passes any other to the
previous ``sys.excepthook``.

Contract: it looks only at the frame running ``__main__``'s top-level code, if that frame is on
the main thread's stack (whichever thread asks: grading workers start from a helper thread); the
statement running there must be an ``if __name__ ==
"__main__":`` block. Interactive sessions, ``python -c`` and code run after the main module
finished (a server's handler, a notebook cell) are never refused.
"""

from __future__ import annotations

import ast
import sys
import threading
from functools import cache
from types import FrameType, TracebackType

from ._errors import MainGuardError, unwrap_exception_group


def check_main_guard(what: str) -> None:
    """Raise ``MainGuardError`` if ``what`` (e.g. "the vLLM engine") is being started from
    unguarded top-level code of the main script; else return."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if main is None or not isinstance(path, str):
        return
    frame: FrameType | None = sys._current_frames().get(threading.main_thread().ident or -1)
    while frame is not None and not (frame.f_globals is vars(main) and frame.f_code.co_name == "<module>"):
        frame = frame.f_back
    if frame is None or _guarded(path, frame.f_lineno):
        return
    _install_hook()
    raise MainGuardError(
        f"{what} starts a process that re-imports {path} (multiprocessing 'spawn'), and line "
        f"{frame.f_lineno} of it calls pacore-agents at the script's top level: put that code under "
        "`if __name__ == \"__main__\":` (see the README's Python example)")


def _install_hook() -> None:
    previous = sys.excepthook
    if getattr(previous, "_pacore_main_guard", False):
        return

    def hook(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        leaf = unwrap_exception_group(exc)
        if isinstance(leaf, MainGuardError):
            print(f"error: {leaf}", file=sys.stderr)
        else:
            previous(kind, exc, tb)

    hook._pacore_main_guard = True  # type: ignore[attr-defined]
    sys.excepthook = hook


def _guarded(path: str, line: int) -> bool:
    """Whether ``line`` of the file lies in a top-level ``if __name__ == "__main__":`` block
    (an unreadable or unparsable file counts as guarded: never refuse on a guess)."""
    blocks = _guard_blocks(path)
    return blocks is None or any(start <= line <= end for start, end in blocks)


@cache
def _guard_blocks(path: str) -> tuple[tuple[int, int], ...] | None:
    try:
        with open(path, encoding="utf-8") as handle:
            tree = ast.parse(handle.read(), filename=path)
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return None
    return tuple((stmt.lineno, stmt.end_lineno or stmt.lineno) for stmt in tree.body
                 if isinstance(stmt, ast.If) and _is_main_test(stmt.test))


def _is_main_test(test: ast.expr) -> bool:
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq)):
        return False
    sides = [test.left, test.comparators[0]]
    names = [s for s in sides if isinstance(s, ast.Name) and s.id == "__name__"]
    consts = [s for s in sides if isinstance(s, ast.Constant) and s.value == "__main__"]
    return len(names) == 1 and len(consts) == 1
