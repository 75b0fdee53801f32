#!/usr/bin/env bash
# Installs lightning-insight with its test dependencies and the YOLOX example into .venv (through the
# lock file) and runs lint, type checks and the whole test suite (slow tests included).
set -euo pipefail
cd "$(dirname "$0")/.."
# The InsightBoard browser test drives Debian's Chromium through Playwright (which cannot download a
# browser here); installed once, only where it is missing. Without root the test is skipped instead.
if [ ! -x /usr/bin/chromium ]; then
    if [ "$(id -u)" -eq 0 ]; then
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
    else
        echo "scripts/test.sh: /usr/bin/chromium is missing (not root): the browser test will be skipped" >&2
    fi
fi
# The Fashion-MNIST case study (tests/test_case_study.py) reads Debian's dataset-fashion-mnist (MIT; the
# real IDX files, offline); installed the same way. Without root the case-study test is skipped instead.
if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
    if [ "$(id -u)" -eq 0 ]; then
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null
    else
        echo "scripts/test.sh: Debian's dataset-fashion-mnist is missing (not root): the case study will be skipped" >&2
    fi
fi
python3 -m venv .venv
.venv/bin/pip install --quiet -c constraints.txt -e ".[test]"
bash examples/yolox/install.sh   # the YOLOX example (its own package); tests/examples runs it end to end
export WANDB_MODE=offline WANDB_SILENT=true
.venv/bin/ruff check lightning_insight tests benchmarks examples
.venv/bin/ruff format --check lightning_insight tests benchmarks examples
.venv/bin/mypy
.venv/bin/pytest "$@"
