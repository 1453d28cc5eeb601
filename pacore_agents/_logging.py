"""Logging: structlog loggers that route through the stdlib's ``logging``, with secrets redacted.

Contracts:
- The library only emits events (``get_logger``): it prints nothing until the application
  configures logging (a ``NullHandler`` sits on the ``pacore_agents`` logger, so the stdlib's
  last-resort stderr handler never fires for our events).
- ``configure_logging`` (used by both CLIs) sends human-readable warnings to stderr (info with
  ``verbose``) and, optionally, every event of ours as JSON lines to a file (``--log-json``).
  Other libraries' records below WARNING (httpx/httpcore/openai transport lines, asyncio...)
  are left out of both unless ``transport=True`` includes them in the JSON file. It also owns
  vLLM's own logger (level by verbosity, on stderr) so every CLI behaves the same.
- Every record that reaches a configured handler is redacted, whatever logger it came from:
  URL credentials, ``Authorization`` values, ``api_key=``/``"api_key": ...`` values,
  ``sk-...`` keys, and every value given to ``register_secret``.
- ``bind_context(**kw)`` binds context (problem, arm, sample, node...) that every event logged
  inside it, in this task and the tasks it starts, carries.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import structlog

NAMESPACE = "pacore_agents"
REDACTED = "***"

logging.getLogger(NAMESPACE).addHandler(logging.NullHandler())

_SHARED: list[structlog.typing.Processor] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]

# --- redaction ---------------------------------------------------------------------------------

_SECRET_KEYS = r"(?:api[_-]?key|apikey|x-api-key|access[_-]?token|auth[_-]?token|token|secret|client[_-]?secret|password|passwd)"
_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    # scheme://user:pass@host -> scheme://***@host (userinfo cannot hold / ? # or @ unencoded)
    (re.compile(r"(\b[A-Za-z][A-Za-z0-9+.\-]*://)[^\s/?#@\"'<>]+@"), r"\1" + REDACTED + "@"),
    # Authorization: Bearer x / authorization=x / (b'authorization', b'Bearer x')
    (re.compile(r"(?i)(\b(?:proxy-)?authorization\b['\"]?\s*(?:[:=]|,\s*b?['\"])\s*['\"]?)[^'\"\n,)}\]]+"),
     r"\1" + REDACTED),
    (re.compile(r"(?i)\b(bearer\s+)[^\s'\",)}\]]+"), r"\1" + REDACTED),
    # api_key=x, "api_key": "x", password: x ...
    (re.compile(r"(?i)(\b" + _SECRET_KEYS + r"\b['\"]?\s*[:=]\s*b?['\"]?)(?!\*\*\*)[^\s'\",}&)\]]+"),
     r"\1" + REDACTED),
    # OpenAI-style keys
    (re.compile(r"\bsk-[A-Za-z0-9_\-]{12,}"), "sk-" + REDACTED),
]
_registered: tuple[str, ...] = ()
_registered_lock = threading.Lock()


def register_secret(value: str | None) -> None:
    """Redact ``value`` (and its URL-encoded form) from every log record from now on.

    ``None``, empty values and the placeholder key ``EMPTY`` are ignored."""
    global _registered
    if not value or value == "EMPTY":
        return
    with _registered_lock:
        forms = set(_registered) | {value, quote(value, safe="")}
        _registered = tuple(sorted(forms, key=len, reverse=True))  # longest first


def redact(text: str) -> str:
    """``text`` with every known secret replaced by ``***``."""
    for secret in _registered:
        if secret in text:
            text = text.replace(secret, REDACTED)
    for pattern, repl in _PATTERNS:
        text = pattern.sub(repl, text)
    return text


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: _redact_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact_value(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_redact_value(v) for v in value)
    if isinstance(value, (int, float, bool, type(None))):
        return value
    try:  # any other object is rendered through str(): redact that text if it holds a secret
        text = str(value)
    except Exception:
        return value
    red = redact(text)
    return red if red != text else value


_KEEP = frozenset({"exc_info", "stack_info"})  # rendered later; the rendered line is redacted


def redact_processor(logger: Any, method_name: str, event_dict: structlog.typing.EventDict) -> structlog.typing.EventDict:
    """structlog processor: redact the event and every value (nested dicts and lists too)."""
    return {k: (v if k.startswith("_") or k in _KEEP else _redact_value(v))
            for k, v in event_dict.items()}


def _redact_rendered(logger: Any, method_name: str, rendered: Any) -> Any:
    """Last step after the renderer: redact the final line (tracebacks included)."""
    return redact(rendered) if isinstance(rendered, str) else rendered


class RedactingFilter(logging.Filter):
    """A handler filter: redacts foreign (stdlib) records in place, and drops other libraries'
    records below WARNING unless ``transport`` is set. Our own events pass; the formatter's
    processors redact them."""

    def __init__(self, *, transport: bool = False) -> None:
        super().__init__()
        self.transport = transport

    def filter(self, record: logging.LogRecord) -> bool:
        own = record.name == NAMESPACE or record.name.startswith(NAMESPACE + ".")
        if not own and not self.transport and record.levelno < logging.WARNING:
            return False
        if not isinstance(record.msg, dict):  # a foreign record: freeze and redact its message
            record.msg, record.args = redact(record.getMessage()), None
        return True


# --- context -----------------------------------------------------------------------------------

@contextmanager
def bind_context(**kw: Any) -> Iterator[None]:
    """Bind ``kw`` to every event logged inside (tasks started inside inherit it)."""
    with structlog.contextvars.bound_contextvars(**kw):
        yield


# --- loggers and configuration -----------------------------------------------------------------

def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A structlog logger for ``name`` that emits through ``logging.getLogger(name)``."""
    logger: structlog.stdlib.BoundLogger = structlog.wrap_logger(
        logging.getLogger(name),
        processors=[*_SHARED, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        wrapper_class=structlog.stdlib.BoundLogger,
    )
    return logger


def _handler(handler: logging.Handler, renderer: structlog.typing.Processor, level: int,
             *, transport: bool = False) -> logging.Handler:
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    redact_processor, renderer, _redact_rendered],
        foreign_pre_chain=[*_SHARED, redact_processor],
    ))
    handler.addFilter(RedactingFilter(transport=transport))
    handler.setLevel(level)
    return handler


def _own_vllm_logging(verbose: bool) -> None:
    """vLLM configures its own logger (stdout, INFO) at import: default it to stderr, at INFO
    with ``verbose`` and ERROR otherwise (the environment wins if set), in this process and the
    engine processes it starts."""
    level = os.environ.setdefault("VLLM_LOGGING_LEVEL", "INFO" if verbose else "ERROR").upper()
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    logging.getLogger("vllm").setLevel(logging.getLevelName(level) if level in logging.getLevelNamesMapping()
                                       else logging.ERROR)


def configure_logging(*, verbose: bool = False, json_path: Path | None = None,
                      transport: bool = False) -> None:
    """Route structlog (and stdlib) events to stderr and, if given, a JSON-lines file.

    ``transport`` also writes other libraries' debug lines (HTTP transport...) to the JSON
    file, redacted like everything else."""
    structlog.configure(
        processors=[*_SHARED, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    console_level = logging.INFO if verbose else logging.WARNING
    root.addHandler(_handler(logging.StreamHandler(sys.stderr),
                             structlog.dev.ConsoleRenderer(
                                 colors=False, exception_formatter=structlog.dev.plain_traceback), console_level))
    own_level = console_level
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        root.addHandler(_handler(logging.FileHandler(json_path, encoding="utf-8"),
                                 structlog.processors.JSONRenderer(), logging.DEBUG, transport=transport))
        own_level = logging.DEBUG
    logging.getLogger(NAMESPACE).setLevel(own_level)
    root.setLevel(logging.DEBUG if json_path is not None and transport else logging.WARNING)
    _own_vllm_logging(verbose)
