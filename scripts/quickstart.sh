#!/usr/bin/env bash
# Installs lightning-insight into .venv (through the lock file) and runs the quickstart:
# a small CNN on the embedded synthetic scenes data with every monitor on; TensorBoard logs and the
# CSV report land in lightning_logs/.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install --quiet -c constraints.txt -e .
.venv/bin/lightning-insight fit --config configs/quickstart.yaml "$@"
