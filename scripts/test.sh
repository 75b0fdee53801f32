#!/usr/bin/env bash
# Installs lightning-insight with its test dependencies and the YOLOX example into .venv (through the
# lock file) and runs lint, type checks and the whole test suite (slow tests included).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install --quiet -c constraints.txt -e ".[test]"
bash examples/yolox/install.sh   # the YOLOX example (its own package); tests/examples runs it end to end
export WANDB_MODE=offline WANDB_SILENT=true
.venv/bin/ruff check lightning_insight tests benchmarks examples
.venv/bin/ruff format --check lightning_insight tests benchmarks examples
.venv/bin/mypy
.venv/bin/pytest "$@"
