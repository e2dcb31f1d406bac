#!/usr/bin/env bash
# One-call GPU verification: device facts, GPU tests, kernel/MFU/loader benchmarks, the
# pytest-benchmark suite, and the speed recipes over several seeds, as JSON files.
#
#   bash bench/gpu_check.sh [OUTDIR]            # on a GPU; default OUTDIR bench/results
#   FASTRES_DATA=/root/cifar bash bench/gpu_check.sh "$OUT"   # also cifar10-94 (>= 25 runs)
#   bash bench/gpu_check.sh --smoke OUTDIR      # CPU plumbing check with tiny recipes (tests use it)
#
# Every file is named <date>-<device>-<commit>-<what>.json. Budget: < 9 minutes on one H100.
#
# On the lent device machines (no internet, at most 64 MiB carried per call) the data travel in
# three calls made back to back (a machine stays warm ~30 s), from ignored copies made here:
#   mkdir -p data_cache/carry && cp ../shared/data/{unpack_cifar10.py,cifar10-part*.tar} data_cache/carry/
#   cp /usr/share/datasets/fashion-mnist/*.gz data_cache/
#   1. carry [data_cache/carry/unpack_cifar10.py, data_cache/carry/cifar10-part1.tar]:
#        python3 data_cache/carry/unpack_cifar10.py /root/cifar data_cache/carry/cifar10-part1.tar
#   2. carry [data_cache/carry/unpack_cifar10.py, data_cache/carry/cifar10-part2.tar]:
#        python3 data_cache/carry/unpack_cifar10.py /root/cifar data_cache/carry/cifar10-part2.tar
#   3. carry the four data_cache/*-ubyte.gz files (Fashion-MNIST, found in ./data_cache):
#        FASTRES_DATA=/root/cifar bash bench/gpu_check.sh "$OUT"
#   then copy $OUT's files into bench/results/ (and a first baseline into bench/baselines/).
set -uo pipefail
cd "$(dirname "$0")/.."
SMOKE=0
if [ "${1:-}" = "--smoke" ]; then SMOKE=1; shift; fi
OUTDIR=${1:-bench/results}
mkdir -p "$OUTDIR"
PY=${PYTHON:-python3}
# The device machines have no internet: install this checkout offline if it is not importable.
if ! $PY -c "import fastres.kernels" 2>/dev/null; then
  $PY -m pip install -q --no-deps --no-build-isolation -e . || { echo "gpu_check: cannot install fastres"; exit 2; }
fi

SLUG=$($PY tests/bench/bench_machine.py)          # e.g. h100-80gb-hbm3, cpu-amd-epyc-2c
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
PREFIX="$OUTDIR/$(date -u +%Y-%m-%d)-$SLUG-$COMMIT"
STATUS=0
step() { echo; echo "=== $* ($(date -u +%H:%M:%S))"; }
fail() { echo "gpu_check: FAILED: $*"; STATUS=1; }

step "device and versions"
$PY - "$PREFIX-env.json" <<'PYEOF'
import json, sys
import torch
from fastres.report import environment
env = environment(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
print(json.dumps(env, indent=1))
json.dump(env, open(sys.argv[1], "w"), indent=1)
PYEOF
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv

if [ $SMOKE = 1 ]; then
  RECIPE_FLAGS=(--device cpu --epochs 1 --train-subset 512 --test-subset 256 --width 0.125 --no-compile
                --batch-size 128 --eval-every 0)
  FASHION_RUNS=2; CIFAR_RUNS=2; KERNEL_FLAGS=(--smoke); MFU_FLAGS=(--smoke); LOADER_FLAGS=(--n 1024 --epochs 1)
  BENCH_FLAGS=(--benchmark-disable)
else
  RECIPE_FLAGS=(--eval-every 0)
  FASHION_RUNS=10; CIFAR_RUNS=25; KERNEL_FLAGS=(); MFU_FLAGS=(); LOADER_FLAGS=()
  # Compare with this GPU's committed baseline when there is one; otherwise save a first baseline
  # under OUTDIR/baselines/ to be committed as bench/baselines/$SLUG (see bench/README.md).
  if ls bench/baselines/"$SLUG"/*/0*.json >/dev/null 2>&1; then
    BENCH_FLAGS=(--benchmark-only --benchmark-storage="bench/baselines/$SLUG" --benchmark-compare
                 --benchmark-compare-fail=median:10%)
  else
    BENCH_FLAGS=(--benchmark-only --benchmark-storage="$OUTDIR/baselines/$SLUG" --benchmark-save=baseline)
  fi
  step "GPU tests"
  $PY -m pytest -q -m gpu tests --junitxml="$PREFIX-gpu-tests.xml" -p no:cacheprovider || fail "GPU tests"
fi

step "kernel benchmark"
$PY bench/kernels.py "${KERNEL_FLAGS[@]}" --out "$PREFIX-kernels.json" || fail "bench/kernels.py"

step "loader benchmark"
$PY bench/loader.py "${LOADER_FLAGS[@]}" --json "$PREFIX-loader.json" || fail "bench/loader.py"

step "benchmark suite"
$PY -m pytest -q tests/bench "${BENCH_FLAGS[@]}" --benchmark-json="$PREFIX-bench-suite.json" -p no:cacheprovider \
  || fail "benchmark suite"

# recipe NAME RUNS: train RUNS seeds and keep the start + per-run + summary records as one JSON.
recipe() {
  local name=$1 runs=$2 dir
  dir=$(mktemp -d)
  step "recipe $name x $runs"
  if $PY -m fastres --recipe "$name" --runs "$runs" --output "$dir" "${RECIPE_FLAGS[@]}"; then
    $PY - "$dir/runs.jsonl" "$PREFIX-$name.json" "$name" <<'PYEOF'
import json, sys
records = [json.loads(line) for line in open(sys.argv[1])]
result = {"benchmark": "recipe", "recipe": sys.argv[3],
          "start": next(r for r in records if r["type"] == "start"),
          "runs": [r for r in records if r["type"] == "run"],
          "summary": next(r for r in records if r["type"] == "summary")}
json.dump(result, open(sys.argv[2], "w"), indent=1)
s = result["summary"]
print(f"{sys.argv[3]}: {s['runs']} runs, acc {s['acc_mean']:.4f} +- {s['acc_std']:.4f}, "
      f"time {s['time_mean']:.3f} +- {s['time_std']:.3f} s, p(mean > target) = {s['p_mean_above_target']}")
PYEOF
  else
    fail "recipe $name"
  fi
  rm -rf "$dir"
}

recipe fashion-94 $FASHION_RUNS
if [ -n "${FASTRES_DATA:-}" ] && [ -d "$FASTRES_DATA/cifar-10-batches-bin" ] || [ -d data_cache/cifar-10-batches-bin ]; then
  recipe cifar10-94 $CIFAR_RUNS
else
  echo "CIFAR-10 not found (set FASTRES_DATA): cifar10-94 skipped"
fi

step "MFU"
if [ $SMOKE = 0 ]; then   # from the timed recipe runs above: no extra training on the GPU
  for name in cifar10-94 fashion-94; do
    [ -f "$PREFIX-$name.json" ] && { MFU_FLAGS=(--from-json "$PREFIX-$name.json"); break; }
  done
fi
if [ ${#MFU_FLAGS[@]} -gt 0 ]; then
  $PY bench/mfu.py "${MFU_FLAGS[@]}" --out "$PREFIX-mfu.json" || fail "bench/mfu.py"
else
  echo "no recipe result to compute MFU from"
fi

step "done: status $STATUS"
ls -l "$OUTDIR" | grep -- "$(basename "$PREFIX")"
exit $STATUS
