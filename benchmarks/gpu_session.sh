#!/usr/bin/env bash
# What a session lent a GPU machine runs there (the device tool's `run`; see cuda/README.md): build
# with CUDA, the CUDA tests on the device (and under the emulation), then benchmarks/cuda.py. With
# the argument `sanitize` (a call of its own: the two would not fit one call's 10 minutes), every
# kernel once under compute-sanitizer (memcheck, racecheck) instead.
# Logs and the benchmark's JSON go to $OUT. The machine has no network: the model comes as two
# carried halves, .gpu/a/part00 and .gpu/b/part01 (cuda/README.md says how to make them).
set -uo pipefail
OUT=${OUT:-/tmp/fastlm-gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
python3 -c "import fastlm._C" 2>/dev/null || python3 -m pip install -q --no-build-isolation --no-deps . 2>&1 | tail -20
if [ "${1:-}" = sanitize ]; then
  # each kernel once at small sizes under compute-sanitizer: out-of-bounds and misaligned accesses,
  # then shared-memory races (what the emulation cannot see)
  for tool in memcheck racecheck; do
    timeout 270 compute-sanitizer --tool "$tool" --print-limit 20 python3 benchmarks/cuda.py --check-only \
      > "$OUT/sanitize-$tool.log" 2>&1
    echo "compute-sanitizer $tool: exit $?; $(grep 'ERROR SUMMARY' "$OUT/sanitize-$tool.log" | tail -1)"
  done
  exit 0
fi
python3 -c "from fastlm import _C; print('cuda:', _C.build_info()['cuda'], [_C.cuda.device_name(i) for i in range(_C.cuda.device_count())])"
python3 -m pytest -q tests/test_cuda.py 2>&1 | tee "$OUT/test_cuda.log" | tail -30
model=/tmp/SmolLM2-135M-Instruct.Q4_1.gguf
if [ -f .gpu/a/part00 ] && [ -f .gpu/b/part01 ]; then
  cat .gpu/a/part00 .gpu/b/part01 > "$model"
  python3 benchmarks/cuda.py --model "$model" --json "$OUT/cuda.json" 2>&1 | tee "$OUT/bench.log"
else
  python3 benchmarks/cuda.py --skip-decode --json "$OUT/cuda.json" 2>&1 | tee "$OUT/bench.log"
fi
