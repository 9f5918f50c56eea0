#!/usr/bin/env bash
# The GPU benchmark, one short run: xlp's extraction vs a bare forward pass of an XLM-R-base-sized
# model on the same batches. Run on a CUDA machine from the repository root; prints the card's name.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'" 
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # a GPU image without the package installed (no registry there)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 benchmarks/gpu.py "$@"
