#!/usr/bin/env bash
# Installs the YOLOX example (import name `insight_yolox`) into the project's .venv, through the lock file.
# pixeltable-yolox goes in with --no-deps: its metadata asks for torchvision (whose only wheel here breaks
# torchmetrics; insight_yolox supplies a pure-torch NMS instead) and for onnx tooling it never imports.
# The example goes in last with --no-deps: its dependencies are the line before (and lightning-insight,
# which the config and tests use, is the project itself).
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
    .venv/bin/pip install --quiet -c constraints.txt -e .
fi
.venv/bin/pip install --quiet -c constraints.txt loguru "opencv-python-headless<5" psutil tabulate pycocotools
.venv/bin/pip install --quiet -c constraints.txt --no-deps pixeltable-yolox==0.4.3
.venv/bin/pip install --quiet -c constraints.txt --no-deps -e examples/yolox
.venv/bin/python -c "import insight_yolox; print('insight_yolox', insight_yolox.__file__)"
