#!/usr/bin/env bash
# The checks for a machine with an NVIDIA GPU and CuPy, in one run from the repository root:
#   1. the CuPy tests (tests/test_backend.py's CuPy section: every registry operation's samples
#      to second order, the transforms, Tensor.backward, a cm.nn model moved with
#      Module.to("cupy"); the optimizers; the README's CuPy block);
#   2. benchmarks/bench_gpu.py (calcml on CuPy against the hand-written floor on CuPy and
#      PyTorch CUDA eager);
#   3. the whole test suite with CuPy present.
# Logs and bench_gpu.json go to $OUT (default ./gpu-out).  calcml runs from this checkout
# (PYTHONPATH); nothing is installed but what the caller put on the path before.
set -uo pipefail
OUT="${OUT:-gpu-out}"
mkdir -p "$OUT"
# the package's metadata (its console script) from an offline install beside the checkout
python3 -m pip install -q --no-deps --no-build-isolation --no-index --target /tmp/calcml-meta . \
  >/dev/null 2>&1 || echo "(calcml's metadata not installed: test_cli's entry-point test fails)"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}:/tmp/calcml-meta" MPLBACKEND=Agg CI=true \
  PYTHONUNBUFFERED=1
nvidia-smi -L 2>&1 | tee "$OUT/device.txt"
python3 -c "import sys, numpy, cupy, calcml; print(sys.version.split()[0], 'numpy', numpy.__version__,
'cupy', cupy.__version__, 'cupy sees a GPU:', calcml.backend.cupy_available())" 2>&1 \
  | tee -a "$OUT/device.txt"
status=0
echo "== 1. CuPy tests"
timeout 300 python3 -m pytest -q -p no:cacheprovider -rs tests/test_backend.py tests/test_readme.py \
  tests/test_optim.py -k "cupy or readme or module_to" 2>&1 | tee "$OUT/test_cupy.log" | tail -25
status=$((status | ${PIPESTATUS[0]}))
echo "== 2. bench_gpu"
timeout 300 python3 benchmarks/bench_gpu.py --json "$OUT/bench_gpu.json" 2>&1 \
  | tee "$OUT/bench_gpu.log" | grep -v ": done$"
status=$((status | ${PIPESTATUS[0]}))
echo "== 3. the whole suite"
workers=$(python3 -c "import xdist" 2>/dev/null && echo "-n 8" || echo "")
timeout 400 python3 -m pytest -q -p no:cacheprovider $workers 2>&1 | tee "$OUT/test_all.log" \
  | tail -30
status=$((status | ${PIPESTATUS[0]}))
exit "$status"
