#!/usr/bin/env bash
# The prepared GPU run of issue 25: scripts/gpu_check.sh OUT_DIR [--tiny] [more bench-sd --suite options]
#
# On one CUDA device (H100/H200) it runs, each part in its own process under its own cap, most important first:
#   cuda-tests   (cap 100 s, ~60 s)  the CUDA tests: sync-debug inner loop for every solver and step rule,
#                                     compiled CUDA cases, half-precision exact JVP (pytest -k cuda)
#   sd15-batch1  (cap 200 s, ~170 s) SD 1.5 (random weights) 512x512 float16 batch 1: plain, paper-inpainting,
#                                     gradient descent, exact JVP; eager, then compiled (reduce-overhead)
#   step-memory  (cap  60 s, ~40 s)  one step of 4 inner steps, SD 1.5 UNet and SD3 Medium full depth (bfloat16):
#                                     seconds per inner step, peak memory of plain / inexact Newton / gradient descent / exact JVP
#   sd15-batch4  (cap  60 s, ~50 s)  the same at batch 4: seconds per image
# Caps total 420 s (7 minutes); expected about 5.5 minutes on one H100. Every part writes OUT_DIR/<part>.json
# after each row and OUT_DIR/<part>.md when it ends; then OUT_DIR/report.md (the issue's four targets),
# summary.json and docs_block.md. Afterwards, on any machine:
#   scripts/gpu_check.sh OUT_DIR --report-only --write-docs docs/benchmarks.md
# --tiny: the CPU dry run (tiny networks, well under a minute; tests/test_gpu_check.py runs it).
#
# The GPU machine's image lacks diffusers and pydantic: scripts/gpu_wheels.sh downloads them here into .whl/,
# the device call carries .whl, and this script installs them into a temporary folder when the imports fail.
set -uo pipefail
if [ $# -lt 1 ] || [[ "$1" == -* ]]; then
  echo "usage: scripts/gpu_check.sh OUT_DIR [--tiny] [--report-only] [--write-docs PAGE] [--parts ...] [--cap PART=S]" >&2
  exit 2
fi
out="$1"; shift
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python3}"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if ! "$python" -c "import diffusers, pydantic" 2>/dev/null; then
  if [ -d "$root/.whl" ]; then
    site="$(mktemp -d)"
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" "$root"/.whl/*.whl || exit 3
    export PYTHONPATH="$PYTHONPATH:$site"
  else
    echo "gpu_check: diffusers/pydantic are missing and there is no .whl/ (run scripts/gpu_wheels.sh where pip works)" >&2
    exit 3
  fi
fi
cd "$root" || exit 2
exec "$python" -m constrained_diffusion bench-sd --suite gpu --out "$out" "$@"
