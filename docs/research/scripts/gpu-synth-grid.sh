#!/usr/bin/env bash
# The generator x verifier strength grid (issue 37) at a scale no CPU can run: 1M, 20M and 40M generators from
# scratch on up to 500k synth problems, 100 samples per problem, every verifier start, on one CUDA GPU; all
# results under one folder (default runs/gpu-synth-grid: grid.md, grid.json, strength.png, one run folder per
# cell). Sized for about 10 minutes on one H100 from the FLOPs; never run on a GPU yet.
#   bash docs/research/scripts/gpu-synth-grid.sh [OUT] [key=value ...]
# GSMV_GRID_SCALE=tiny runs the same grid at test size on a CPU (tests/research/test_strength_grid.py).
set -euo pipefail
out="${1:-runs/gpu-synth-grid}"
exec python "$(dirname "$0")/strength_grid.py" run --scale "${GSMV_GRID_SCALE:-gpu}" --out "$out" "${@:2}"
