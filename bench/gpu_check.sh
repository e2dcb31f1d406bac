#!/usr/bin/env bash
# GPU verification: device facts, GPU tests, kernel/MFU/loader benchmarks, the pytest-benchmark
# suite, and the speed recipes over several seeds, as JSON files.
#
#   bash bench/gpu_check.sh [OUTDIR]            # everything (default OUTDIR bench/results), < 9 min on an H100
#   FASTRES_DATA=/root/cifar bash bench/gpu_check.sh "$OUT"   # CIFAR-10 there: also cifar10-94 (25 runs)
#   bash bench/gpu_check.sh --phase kernels|host|cifar|fashion|compare OUTDIR   # one part (see below)
#   bash bench/gpu_check.sh --smoke OUTDIR      # CPU plumbing check with tiny recipes (tests use it)
#
# Phases: kernels = GPU tests, launch-knob sweep of the fused BN kernel (timed as CUDA graphs),
# kernel benchmark with the best knobs (and each layer's time per Triton kernel), then the host
# phase; host = host cost per BN layer, loader benchmark, benchmark suite (each as time
# allows); cifar = cifar10-94 (25 runs; GPU_CHECK_CIFAR_FLAGS adds flags to them, e.g. a
# configuration the compare phase picked) and its MFU, and, if its mean misses 94%, the same
# 25 seeds at 10.9 epochs instead of 9.9 (in the next phase on this machine if this call's
# budget cannot hold it); fashion = fashion-94 (10 runs) and its MFU;
# compare = cifar10-94 over 5 seeds with the fused BN op or PyTorch's, each without and with CUDA
# graphs (--compile-mode reduce-overhead), and the fused op as triton_op (FASTRES_BN_OP): what the
# fused op, its registration and graphs are worth end to end.
# Optional runs (cifar10-myrtle in the cifar phase; cifar10-94-speedrun, fashion-94-resnet9 and
# cifar10-94-muon in the fashion phase; 5 runs each; every run of the compare phase) start only
# if they should end within the call's time budget
# GPU_CHECK_BUDGET (seconds from the script's start, default 540). GPU_CHECK_DEADLINE (seconds,
# default none) interrupts whatever runs at that point, keeping the recipe runs that finished,
# so a call ends before the device's limit kills it with nothing written. The sweep's best knobs,
# adopted when its confirmation (the best and the defaults timed again in turn) puts them >= 3%
# ahead, are kept in GPU_CHECK_STATE (default /tmp/fastres-gpu-check), which survives between
# calls on a warm machine, and are given to later recipes as FASTRES_BN_TUNING.
# If the fused kernel fails a quick check against PyTorch on the GPU, the recipes run with
# --no-fused-bn and say so. Every file is named <date>-<device>-<commit>-<what>.json.
#
# On the lent device machines (no internet, at most 64 MiB carried per call, a machine stays
# warm ~30 s) CIFAR-10 travels in two packs, so the work is split over calls made back to
# back, from ignored copies made here:
#   mkdir -p data_cache/carry && cp ../shared/data/{unpack_cifar10.py,cifar10-part*.tar} data_cache/carry/
#   cp /usr/share/datasets/fashion-mnist/*.gz data_cache/
#   1. carry [data_cache/carry/unpack_cifar10.py, data_cache/carry/cifar10-part1.tar]:
#        python3 data_cache/carry/unpack_cifar10.py /root/cifar data_cache/carry/cifar10-part1.tar
#        && bash bench/gpu_check.sh --phase kernels "$OUT"
#   2. carry [data_cache/carry/unpack_cifar10.py, data_cache/carry/cifar10-part2.tar]:
#        python3 data_cache/carry/unpack_cifar10.py /root/cifar data_cache/carry/cifar10-part2.tar
#        && FASTRES_DATA=/root/cifar bash bench/gpu_check.sh --phase cifar "$OUT"   (or compare)
#   3. carry the four data_cache/*-ubyte.gz files (Fashion-MNIST, found in ./data_cache):
#        FASTRES_DATA=/root/cifar bash bench/gpu_check.sh --phase fashion "$OUT"   (or compare)
#   Commit first and add FASTRES_COMMIT=<git rev-parse --short HEAD here> to every call: the copy
#   of the checkout on the device machine may lack .git. Size each call so they fit the session's
#   device time (15 min with the first start, which took ~32 s on 2026-11-28). That session's
#   calls: 1. budget / deadline 150 / 250 s, timeout_s 280 (took 186 s: the kernels phase
#   without host, loader and suite); 2. 300 / 330 s, timeout_s 360 (took 189 s: cifar10-94's 25
#   runs in 157 s with its warm-up); 3. timeout_s = budget_left_s - 60 with the deadline 30 s
#   under it (took 299 s). The H200 session of 2026-12-04: 1. kernels, 450 / 470 s, took 349 s
#   (tests 111 s, sweep 74 s, kernel benchmark 68 s, host 55 s, loader 10 s; the suite skipped);
#   the machine then went back, so a fresh one needed part 1 unpacked again (a 2 s call) and
#   the sweep's adopted knobs by hand (FASTRES_BN_TUNING); 2. compare, 370 / 385 s, took 247 s
#   (all five variants). Planned for the next run (bench/results/2026-11-28-next-gpu-run-
#   protocol.md, its addendum 6): 1. kernels, 330 / 350 s, timeout_s 380; 2. compare, 250 /
#   265 s, timeout_s 290; 3. --phase cifar with what is left, no carry.
#   Use PYTHONUNBUFFERED=1 ... 2>&1 | tee "$OUT/log" so a call cut short still returns its log.
#   Then copy each call's files into bench/results/ (and a first baseline into bench/baselines/);
#   python bench/results_table.py bench/results/<those files> prints README's rows for them.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
SMOKE=0
PHASE=all
while [ $# -gt 0 ]; do
  case $1 in
    --smoke) SMOKE=1; shift ;;
    --phase) PHASE=${2:-}; shift 2 ;;
    -*) echo "gpu_check: unknown option $1 (use --smoke, --phase PHASE, OUTDIR)"; exit 2 ;;
    *) break ;;
  esac
done
case $PHASE in
  all|kernels|host|cifar|fashion|compare) ;;
  *) echo "gpu_check: --phase must be all, kernels, host, cifar, fashion or compare, got '$PHASE'"; exit 2 ;;
esac
OUTDIR=${1:-bench/results}
BUDGET=${GPU_CHECK_BUDGET:-540}
DEADLINE=${GPU_CHECK_DEADLINE:-0}
STATE=${GPU_CHECK_STATE:-/tmp/fastres-gpu-check}
if [ $SMOKE = 1 ] && [ -z "${GPU_CHECK_STATE:-}" ]; then STATE=$(mktemp -d); trap 'rm -rf "$STATE"' EXIT; fi
mkdir -p "$OUTDIR" "$STATE"
PY=${PYTHON:-python3}
# The device machines have no internet: install this checkout offline if it is not importable.
# Where pip cannot map kernels/ to fastres.kernels (an old pip or setuptools falls back to
# `setup.py develop`, which ignores package_dir), link the folder in and use the checkout as is.
if ! $PY -c "import fastres.kernels" 2>/dev/null; then
  $PY -m pip install -q --no-deps --no-build-isolation -e . || echo "gpu_check: pip could not install fastres"
  if ! $PY -c "import fastres.kernels" 2>/dev/null; then
    [ -e fastres/kernels ] || ln -s ../kernels fastres/kernels
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
    $PY -c "import fastres.kernels" || { echo "gpu_check: cannot import fastres.kernels"; exit 2; }
    echo "gpu_check: fastres runs from the checkout (PYTHONPATH, fastres/kernels linked to kernels/)"
  fi
fi

SLUG=$($PY tests/bench/bench_machine.py)          # e.g. h100-80gb-hbm3, cpu-amd-epyc-2c
# FASTRES_COMMIT names the commit where the checkout travelled without .git (a device machine).
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo "${FASTRES_COMMIT:-unknown}")
COMMIT=${COMMIT:0:7}
PREFIX="$OUTDIR/$(date -u +%Y-%m-%d)-$SLUG-$COMMIT"
STATUS=0
step() { echo; echo "=== $* ($(date -u +%H:%M:%S), ${SECONDS}s)"; }
fail() { echo "gpu_check: FAILED: $*"; STATUS=1; }
# capped CMD...: run CMD, interrupted (SIGINT, then killed) at GPU_CHECK_DEADLINE seconds from the
# start when that is set, so the script ends, and writes what finished, before the device does.
capped() {
  [ "$DEADLINE" -gt 0 ] || { "$@"; return; }
  local left=$((DEADLINE - SECONDS))
  if [ $left -le 5 ]; then echo "gpu_check: deadline reached, not started: $*"; return 124; fi
  timeout --signal=INT --kill-after=15 "$left" "$@"
}
# optional SECONDS_NEEDED CMD...: run CMD only if it should end within this call's budget.
optional() {
  local need=$1; shift
  if [ $((SECONDS + need)) -le "$BUDGET" ]; then "$@"; else echo "gpu_check: skipped (budget ${BUDGET}s): $*"; fi
}

step "device and versions (phase $PHASE)"
[ -f "$STATE/bn_tuning" ] && export FASTRES_BN_TUNING=$(cat "$STATE/bn_tuning")
$PY - "$PREFIX-$PHASE-env.json" <<'PYEOF'
import json, os, sys
import torch
from fastres.report import environment
env = environment(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
env["FASTRES_BN_TUNING"] = os.environ.get("FASTRES_BN_TUNING")
print(json.dumps(env, indent=1))
json.dump(env, open(sys.argv[1], "w"), indent=1)
PYEOF
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv

if [ $SMOKE = 1 ]; then
  RECIPE_FLAGS=(--device cpu --epochs 1 --train-subset 512 --test-subset 256 --width 0.125 --no-compile
                --batch-size 128 --eval-every 0)
  FASHION_RUNS=2; CIFAR_RUNS=2; EXTRA_RUNS=2; MORE_EPOCHS=(--epochs 1.5); KERNEL_FLAGS=(--smoke); LOADER_FLAGS=(--n 1024 --epochs 1)
  HOST_FLAGS=(--iters 20 --no-compile)
  BENCH_FLAGS=(--benchmark-disable)
else
  RECIPE_FLAGS=(--eval-every 0)
  FASHION_RUNS=10; CIFAR_RUNS=25; EXTRA_RUNS=5; MORE_EPOCHS=(--epochs 10.9); KERNEL_FLAGS=(); LOADER_FLAGS=(); HOST_FLAGS=()
  # Compare with this GPU's committed baseline when there is one. Without one, the suite's JSON
  # (same format as --benchmark-save) becomes the first baseline: see bench/README.md.
  if ls bench/baselines/"$SLUG"/*/0*.json >/dev/null 2>&1; then
    BENCH_FLAGS=(--benchmark-only --benchmark-storage="bench/baselines/$SLUG" --benchmark-compare
                 --benchmark-compare-fail=median:10%)
  else
    BENCH_FLAGS=(--benchmark-only)
  fi
fi

kernels_phase() {
  if [ $SMOKE = 0 ]; then
    step "GPU tests"
    capped $PY -m pytest -q -m gpu tests --junitxml="$PREFIX-gpu-tests.xml" -p no:cacheprovider || fail "GPU tests"
  fi
  # The sweep first: its pipelining stages are the kernel's open question, and the benchmark
  # after it runs at its best knobs. The host cost (knob-independent) follows; the compare
  # phase measures end to end what it costs training.
  optional 120 sweep_knobs
  step "kernel benchmark (FASTRES_BN_TUNING=${FASTRES_BN_TUNING:-default})"
  capped $PY bench/kernels.py "${KERNEL_FLAGS[@]}" --out "$PREFIX-kernels.json" || fail "bench/kernels.py"
  # Each kernel's time, bandwidth and share of peak issue, into the log (a diagnostic).
  [ -s "$PREFIX-kernels.json" ] && { $PY bench/results_table.py --breakdown "$PREFIX-kernels.json" || true; }
  host_phase
}

host_bench() {
  step "host cost per BN layer"
  capped $PY bench/host_overhead.py "${HOST_FLAGS[@]}" --out "$PREFIX-host-overhead.json" || fail "bench/host_overhead.py"
}

loader_bench() {
  step "loader benchmark"
  capped $PY bench/loader.py "${LOADER_FLAGS[@]}" --json "$PREFIX-loader.json" || fail "bench/loader.py"
}

suite_bench() {
  step "benchmark suite"
  if [ $SMOKE = 1 ]; then      # timings disabled: nothing to save (pytest-benchmark would leave an empty file)
    capped $PY -m pytest -q tests/bench "${BENCH_FLAGS[@]}" -p no:cacheprovider || fail "benchmark suite"
    return
  fi
  # Written aside and moved in whole (also after a failed comparison: its timings are the news);
  # pytest-benchmark writes it at the session's end, so a suite killed before then leaves none.
  rm -f "$STATE/bench-suite.json"
  capped $PY -m pytest -q tests/bench "${BENCH_FLAGS[@]}" --benchmark-json="$STATE/bench-suite.json" \
    -p no:cacheprovider || fail "benchmark suite"
  [ -s "$STATE/bench-suite.json" ] && mv "$STATE/bench-suite.json" "$PREFIX-bench-suite.json"
}

sweep_knobs() {
  step "fused-kernel launch-knob sweep"
  # The main recipe's net only: each new tile, warps, stages, acc2d or finalize setting compiles
  # the kernels anew for each of its layer shapes (fashion-94's net is the same at half width).
  # Its grid starts no knob set once the kernel benchmark after it (111 s at 5d9fdd7; now with a
  # per-kernel breakdown and timings with the L2 cache as in training: ~170 s) and its own
  # confirmation (~30 s) would no longer fit.
  local end=$BUDGET sweep_flags=()
  [ "$DEADLINE" -gt 0 ] && end=$DEADLINE
  local seconds=$((end - SECONDS - 200))
  [ $SMOKE = 0 ] && sweep_flags=(--sweep-seconds $((seconds > 30 ? seconds : 30)))
  if capped $PY bench/kernels.py "${KERNEL_FLAGS[@]}" --sweep "${sweep_flags[@]}" --recipes cifar10-94 \
      --out "$PREFIX-kernel-sweep.json"; then
    # Adopt the best knobs only if they beat the defaults by >= 3% (not timing noise), on the
    # sweep's confirmation (both timed again in turn), else on the grid's own timings.
    $PY - "$PREFIX-kernel-sweep.json" "$STATE/bn_tuning" <<'PYEOF'
import json, sys
sweep = json.load(open(sys.argv[1]))
speedup, how = sweep.get("confirmed_speedup"), "confirmed"
if speedup is None:
    speedup, how = sweep["best_speedup"], "unconfirmed"
if speedup is not None and speedup >= 1.03:
    open(sys.argv[2], "w").write(sweep["best_env"])
    print(f"adopting FASTRES_BN_TUNING={sweep['best_env']} ({speedup:.2f}x the defaults, {how})")
else:
    print(f"keeping the default knobs (best is {speedup if speedup is None else format(speedup, '.2f')}x, {how})")
PYEOF
    [ -f "$STATE/bn_tuning" ] && export FASTRES_BN_TUNING=$(cat "$STATE/bn_tuning")
  else
    fail "bench/kernels.py --sweep"
  fi
}

# On a GPU, check the fused BN op against PyTorch before the recipes rely on it; on failure the
# recipes fall back to PyTorch's BN (--no-fused-bn), and the result files say so.
FUSED_FLAGS=()
check_fused() {
  [ $SMOKE = 1 ] && return
  step "fused BN quick check"
  if ! $PY - <<'PYEOF'
import copy
import torch
from fastres.kernels import BatchNormAct2d
torch.manual_seed(0)
x = torch.randn(1024, 256, 7, 7, device="cuda", dtype=torch.float16).contiguous(memory_format=torch.channels_last)
fused = BatchNormAct2d(256, act="gelu").cuda()
ref = copy.deepcopy(fused)
ref.backend = "reference"
torch.testing.assert_close(fused(x).float(), ref(x).float(), atol=2e-2, rtol=1e-2)
torch.testing.assert_close(fused.running_var, ref.running_var, atol=1e-4, rtol=1e-4)
print("fused BN matches PyTorch")
PYEOF
  then
    fail "fused BN check: recipes run with --no-fused-bn"
    FUSED_FLAGS=(--no-fused-bn)
  fi
}

# recipe FILE_NAME RECIPE RUNS [FLAGS...]: train RUNS seeds; keep start + runs + summary as one JSON.
recipe() {
  local label=$1 name=$2 runs=$3 dir ok=1 flags
  shift 3
  flags="$*"                       # as the result file records them, with the BN op's switch if set
  [ -n "${FASTRES_BN_OP:-}" ] && flags="FASTRES_BN_OP=$FASTRES_BN_OP${flags:+ $flags}"
  dir=$(mktemp -d)
  step "recipe $name x $runs $flags ${FUSED_FLAGS[*]}"
  capped $PY -m fastres --recipe "$name" --runs "$runs" --output "$dir" "${RECIPE_FLAGS[@]}" "${FUSED_FLAGS[@]}" "$@" || ok=0
  # Finished runs are kept even when the recipe was cut short (the JSON then says complete: false).
  $PY bench/recipe_json.py "$dir/runs.jsonl" "$PREFIX-$label.json" --recipe "$name" --flags="$flags" \
    ${FUSED_FLAGS[@]:+--fallback} || ok=0
  [ $ok = 1 ] || fail "recipe $name $*"
  rm -rf "$dir"
}

# mfu LABEL: model FLOP utilisation from the timed runs of $PREFIX-LABEL.json (no new training).
mfu() {
  step "MFU of $1"
  if [ -f "$PREFIX-$1.json" ]; then
    capped $PY bench/mfu.py --from-json "$PREFIX-$1.json" --out "$PREFIX-$1-mfu.json" || fail "bench/mfu.py $1"
  else
    echo "no $1 result to compute MFU from"
  fi
}

# below_target LABEL: true when $PREFIX-LABEL.json exists and its mean accuracy is under its target.
below_target() {
  [ -f "$PREFIX-$1.json" ] && $PY -c 'import json, sys; s = json.load(open(sys.argv[1]))["summary"]
sys.exit(0 if s["acc_mean"] < s["target"] else 1)' "$PREFIX-$1.json"
}

# more_epochs NEED: the fallback set before any GPU run (bench/results/2026-11-28-cpu-amd-epyc-2c-
# cifar10-94-epochs-protocol.md): cifar10-94's mean missed the target, so the same seeds again with
# one more epoch; both files are kept. It comes before every optional run. Where this call's budget
# cannot hold it (NEED s, what cifar10-94 itself took), the next phase on this machine runs it.
# The base runs' GPU_CHECK_CIFAR_FLAGS travel with a deferred fallback (a later call may not set them).
more_epochs() {
  local need=$1 flags=${2-${GPU_CHECK_CIFAR_FLAGS:-}}
  if [ $((SECONDS + need)) -le "$BUDGET" ]; then
    rm -f "$STATE/more-epochs" "$STATE/more-epochs-flags"
    # shellcheck disable=SC2086
    recipe cifar10-94-more-epochs cifar10-94 $CIFAR_RUNS $flags "${MORE_EPOCHS[@]}"
  else
    echo "$need" > "$STATE/more-epochs"
    echo "$flags" > "$STATE/more-epochs-flags"
    echo "gpu_check: cifar10-94-more-epochs left to the next phase (needs ${need}s, budget ${BUDGET}s)"
  fi
}

cifar_present() {
  { [ -n "${FASTRES_DATA:-}" ] && [ -d "$FASTRES_DATA/cifar-10-batches-bin" ]; } || [ -d data_cache/cifar-10-batches-bin ]
}

cifar_phase() {
  if ! cifar_present; then echo "CIFAR-10 not found (set FASTRES_DATA): cifar10-94 skipped"; return; fi
  check_fused
  local start=$SECONDS
  # GPU_CHECK_CIFAR_FLAGS (word-split, e.g. "--no-fused-bn"): the 25 runs of a candidate
  # configuration the compare phase picked, recorded in the result file's flags.
  # shellcheck disable=SC2086
  recipe cifar10-94 cifar10-94 $CIFAR_RUNS ${GPU_CHECK_CIFAR_FLAGS:-}
  local took=$((SECONDS - start))
  mfu cifar10-94
  below_target cifar10-94 && more_epochs $took
  optional 150 recipe cifar10-myrtle cifar10-myrtle $EXTRA_RUNS
}

# What the fused kernel and CUDA graphs are worth end to end: cifar10-94 over the same seeds with
# the fused BN op or PyTorch's, each launched op by op or as CUDA graphs (torch.compile's
# reduce-overhead mode), and the fused op registered as triton_op so Inductor launches its kernels
# (FASTRES_BN_OP=triton_op). The first H100 run (2026-11-28) found the fused op's host cost per
# layer 3-7x PyTorch's: these say whether a training step is host-bound and which BN to use.
# Times from that run: ~25 s of warm-up with compile and 4.4 s a run, plus the process's start.
compare_phase() {
  if ! cifar_present; then echo "CIFAR-10 not found (set FASTRES_DATA): the comparison skipped"; return; fi
  check_fused
  if [ ${#FUSED_FLAGS[@]} = 0 ]; then
    optional 70 recipe cifar10-94-cmp-fused cifar10-94 $EXTRA_RUNS
    optional 70 recipe cifar10-94-cmp-torch-bn cifar10-94 $EXTRA_RUNS --no-fused-bn
    # CUDA graphs before triton_op: they remove the host's cost per launch altogether, the direct
    # test of whether the fused op's host cost holds training back (protocol addendum 4).
    optional 110 recipe cifar10-94-cmp-fused-cudagraphs cifar10-94 $EXTRA_RUNS --compile-mode reduce-overhead
    if $PY -c "import sys, torch.library as L; sys.exit(not hasattr(L, 'triton_op'))"; then
      FASTRES_BN_OP=triton_op optional 80 recipe cifar10-94-cmp-fused-triton-op cifar10-94 $EXTRA_RUNS
    else
      echo "gpu_check: skipped cifar10-94-cmp-fused-triton-op (FASTRES_BN_OP=triton_op needs torch >= 2.6)"
    fi
  else                             # the fused op failed its check: only PyTorch's BN to compare
    optional 70 recipe cifar10-94-cmp-torch-bn cifar10-94 $EXTRA_RUNS
  fi
  optional 110 recipe cifar10-94-cmp-torch-bn-cudagraphs cifar10-94 $EXTRA_RUNS --no-fused-bn --compile-mode reduce-overhead
}

fashion_phase() {
  check_fused
  recipe fashion-94 fashion-94 $FASHION_RUNS
  mfu fashion-94
  [ -f "$STATE/more-epochs" ] && cifar_present && \
    more_epochs "$(cat "$STATE/more-epochs")" "$(cat "$STATE/more-epochs-flags" 2>/dev/null)"
  # With time to spare: the 2025 record's recipe, the ResNet-9 that was fashion-94 until
  # 2026-11-28 (3.2x the FLOPs per image) and the Muon variant. Estimates from the first H100
  # run: 47 s for the speedrun's 5 runs, 133 s for fashion-94-resnet9's (17 s a run).
  cifar_present && [ $SMOKE = 0 ] && optional 70 recipe cifar10-94-speedrun cifar10-94-speedrun $EXTRA_RUNS
  [ $SMOKE = 0 ] && optional 150 recipe fashion-94-resnet9 fashion-94-resnet9 $EXTRA_RUNS
  cifar_present && [ $SMOKE = 0 ] && optional 80 recipe cifar10-94-muon cifar10-94-muon $EXTRA_RUNS
}

# The kernels phase's measurements after its sweep and kernel benchmark, for a last call whose
# budget holds no more: the host cost, then the loader and the suite if time is left.
host_phase() {
  optional 100 host_bench
  optional 30 loader_bench
  optional 150 suite_bench
}

case $PHASE in
  kernels) kernels_phase ;;
  host) host_phase ;;
  cifar) cifar_phase ;;
  fashion) fashion_phase ;;
  compare) compare_phase ;;
  all) kernels_phase; fashion_phase; cifar_phase; compare_phase ;;
esac

step "done: phase $PHASE, status $STATUS"
ls -l "$PREFIX"-*
exit $STATUS
