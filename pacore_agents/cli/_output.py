"""What every ``pacore`` command prints, and its one error path.

Contracts:
- **Text is text.** Nothing a user, a model or a file wrote is read as rich markup: messages
  are escaped (``[serve]``, ``[/b]`` and ``[engine]`` print as written) and tables get their
  cells as :class:`rich.text.Text`. Only this module's own labels are markup.
- **One error path.** ``errors()`` wraps a command's body: bad input (``ConfigError``, a
  pydantic ``ValidationError``) exits 2, other library errors 1, Ctrl-C 130; an exception group
  is unwrapped to its first leaf. Each is one line on stderr, never a traceback. ``fail``
  exits with one line from anywhere.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from pacore_agents._errors import ConfigError, PacoreError, unwrap_exception_group

if TYPE_CHECKING:
    from pydantic import ValidationError

err = Console(stderr=True, highlight=False, soft_wrap=True)


def console() -> Console:
    """stdout; wide tables when the output is a file or a pipe (rich would use 80 columns)."""
    return Console(highlight=False) if sys.stdout.isatty() else Console(width=140, highlight=False)


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``error: message`` (escaped: the message is text) and exit with ``code``."""
    err.print(f"[red]error:[/red] {escape(message)}")
    raise typer.Exit(code)


def note(label: str, message: str, style: str = "yellow") -> None:
    """One labelled line on stderr (``degraded: ...``, ``failed: ...``), the message escaped."""
    err.print(f"[{style}]{label}:[/{style}] {escape(message)}")


def dim(message: str) -> None:
    """A dim summary line on stderr, escaped."""
    err.print(f"[dim]{escape(message)}[/dim]")


def exit_code_for(exc: BaseException) -> tuple[BaseException, int] | None:
    """The error to show for ``exc`` (an exception group unwrapped) and its exit code: 2 for bad
    input (``ConfigError``), 1 for other library errors; None for anything else (a bug)."""
    leaf = unwrap_exception_group(exc)
    if isinstance(leaf, ConfigError):
        return leaf, 2
    if isinstance(leaf, PacoreError):
        return leaf, 1
    return None


def describe_validation(exc: ValidationError, flag: Callable[[str], str] | None = None) -> str:
    """One line for the first error of ``exc``; ``flag`` spells a field as the command does."""
    first = exc.errors()[0]
    where = ".".join(map(str, first["loc"]))
    return f"bad option {flag(where) if flag else where}: {first['msg']}"


@contextmanager
def errors(*, on_library_error: Callable[[BaseException], None] | None = None,
           interrupted: str = "interrupted") -> Iterator[None]:
    """Turn what a command's body raises into one line and an exit code (see the module doc).

    ``on_library_error`` sees a library error before the exit (``pacore run`` writes the failed
    run's trace there). Anything else propagates: a bug keeps its traceback for the report.
    """
    from pydantic import ValidationError

    try:
        yield
    except typer.Exit:
        raise
    except ValidationError as exc:
        fail(describe_validation(exc))
    except KeyboardInterrupt:
        fail(interrupted, 130)
    except (PacoreError, BaseExceptionGroup) as exc:
        mapped = exit_code_for(exc)
        if mapped is None:
            raise
        leaf, code = mapped
        if on_library_error is not None:
            on_library_error(leaf)
        fail(str(leaf), code)
