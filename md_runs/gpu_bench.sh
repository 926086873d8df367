#!/bin/bash
# The speed issue's GPU checks as one short script, for a machine with a CUDA GPU and a CUDA
# build of torch with this package installed (`pip install -e .`):
#   bash md_runs/gpu_bench.sh [OUT]            (default OUT: bench_gpu; about 5 minutes on one GPU)
# Writes OUT/solver_random.json, OUT/solver_trained.json (Anderson vs forward vs torchdeq on one
# batch of molecules), OUT/md/md.json + md_speed.png (ms per MD step against atoms: explicit, DEQ
# cold, reuse, predictor). Without a GPU it says so and exits 0 without running anything.
set -euo pipefail
out=${1:-bench_gpu}
if ! python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_bench: no CUDA device visible to torch ($(python -c 'import torch; print(torch.__version__)')): skipped"
    exit 0
fi
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader > "$out/gpu.txt" 2>/dev/null || true
dequiformer bench solver --device cuda --molecules 64 --json "$out/solver_random.json"
dequiformer bench solver --device cuda --molecules 64 --checkpoint dequiformer/assets/demo/deq.pt \
    --json "$out/solver_trained.json"
dequiformer bench md --device cuda --copies 1 8 27 64 125 --repeats 3 --quiet --out "$out/md"
echo "gpu_bench: done, results in $out"
