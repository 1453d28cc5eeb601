"""Logging: structlog loggers that route through the stdlib's ``logging``.

The library only emits events (``get_logger``): silent unless the application configures
logging, like any well-behaved library. ``configure_logging`` (used by the CLI) sends
human-readable warnings to stderr (info with ``verbose``) and, optionally, every event as JSON
lines to a file (``--log-json``)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import structlog

_SHARED: list[structlog.typing.Processor] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A structlog logger for ``name`` that emits through ``logging.getLogger(name)``."""
    logger: structlog.stdlib.BoundLogger = structlog.wrap_logger(
        logging.getLogger(name),
        processors=[*_SHARED, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        wrapper_class=structlog.stdlib.BoundLogger,
    )
    return logger


def _handler(handler: logging.Handler, renderer: structlog.typing.Processor, level: int) -> logging.Handler:
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        foreign_pre_chain=_SHARED,
    ))
    handler.setLevel(level)
    return handler


def configure_logging(*, verbose: bool = False, json_path: Path | None = None) -> None:
    """Route structlog (and stdlib) events to stderr and, if given, a JSON-lines file."""
    structlog.configure(
        processors=[*_SHARED, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    console_level = logging.INFO if verbose else logging.WARNING
    root.addHandler(_handler(logging.StreamHandler(sys.stderr),
                             structlog.dev.ConsoleRenderer(colors=False), console_level))
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        root.addHandler(_handler(logging.FileHandler(json_path, encoding="utf-8"),
                                 structlog.processors.JSONRenderer(), logging.DEBUG))
    root.setLevel(logging.DEBUG if json_path is not None else console_level)
    for noisy in ("httpx", "httpcore", "openai"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
