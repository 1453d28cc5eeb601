#!/usr/bin/env bash
# The test command: installs what is missing (scripts/setup.sh, idempotent), then lints,
# type-checks and runs the whole suite, real-engine tests included.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m "not vllm and not server"`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
python -m ruff check pacore_agents tests examples benchmarks
python -m mypy
python -m pytest -q "$@"
