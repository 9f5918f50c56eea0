#!/usr/bin/env bash
# The GPU benchmark, one short run: xlp's extraction vs a bare forward pass of an XLM-R-base-sized
# model on the same batches. Run on a CUDA machine from the repository root; prints the card's name.
set -euo pipefail
cd "$(dirname "$0")/.."
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'" 
pip install -q -e . 2>/dev/null || true
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python benchmarks/gpu.py "$@"
