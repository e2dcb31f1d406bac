"""Benchmark the fused BatchNorm + activation op on every BN layer shape of the recipe nets.

    python bench/kernels.py --out bench/results/DATE-DEVICE-COMMIT-kernels.json   # GPU: the DEFAULT_RECIPES, ~2 min
    python bench/kernels.py --recipes all --out /tmp/kernels-all.json   # every GPU recipe's net
    python bench/kernels.py --smoke --out /tmp/bn_act_smoke.json      # CPU: interpreter plumbing, seconds
    python bench/kernels.py --sweep --out /tmp/kernel-sweep.json   # GPU: launch-knob grid

The layer shapes are read from the recipes' own models (fastres.model.build_model, one image
through hooks on every BatchNormAct2d): channels, height, activation and ghost-batch size of
each BN layer, at the recipe's batch size. The default recipes are those bench/gpu_check.sh
verifies: cifar10-94 (airbench net, 31x31 after the whitening, batch 1024: 64@15 x2, 256@7 x2,
256@3 x2, GELU), fashion-94 (the same net at half width on 28x28, batch 1024: 32@13 x2, 128@6 x2,
128@3 x2, GELU; at most 11 MB a layer), cifar10-94-speedrun (the airbench net at batch 1536,
SiLU), whose 64@15 and 256@7 layers (42 and 37 MB) are the default set's layers of >= 32 MB, the
size the bandwidth goal is stated for, and fashion-94-resnet9 (ResNet-9 at half width on 28x28,
batch 512, CELU, ghost BN of 32: 32@28, 64@14 x3, 128@7, 256@3 x3). --recipes names others (or
all). --ghost overrides every layer's ghost-batch size. A layer's MB here and in the JSON
("mbytes") are MiB (2^20 bytes) of its activation tensor; GB/s are 10^9 bytes per second.

--sweep times the fused op's forward + backward summed over all layers (one training step's
BN work per recipe, summed) for each launch configuration of SWEEP_STAGES, in five stages that
each start from the best so far (tile, warps, programs per SM and pipelining; pipelining depth
and acc2d; more programs for the second pass; the second pass in reverse grid order, for L2
reuse; the finalize tile, with the finalize kernels or fused), and reports the fastest; then it
times the defaults and the fastest again, in turn (CONFIRM_ROUNDS) and with the L2 cache as a
training step leaves it, for a speed-up that is neither the grid's luckiest timing nor helped
by a layer's own replays. --sweep-seconds stops starting knob sets after that long (the
confirmation still runs). Its knobs can be given to training as
FASTRES_BN_TUNING="tile=...,warps=...,stages=...,...".
On a GPU the sweep times CUDA-graph replays: the knobs change the GPU's work, not the host's,
and launched from the host these layers are host-bound (the first H100 run, 2026-11-28, timed
host launches and picked knobs from noise).

On a GPU each layer's row also breaks the fused op down by Triton kernel ("kernels_us": the
GPU microseconds of each launch of its forward + backward), so a slow layer shows which kernel
(statistics, finalize, apply; reduce, finalize, dx) is slow, in two timings: "us", each kernel
replayed alone in a CUDA graph, which leaves its input in the L2 cache wherever it fits, and
"us_in_sequence", the time each kernel adds to its pass (the forward's, the backward's) with
the cache as a training step leaves it (kernels_in_sequence). python bench/results_table.py
--breakdown prints them with the bandwidth each kernel reaches.

For each layer, times forward, backward and both (fwd+bwd; backward = both - forward) for
  fused:    the Triton kernels as eager BatchNormAct2d calls them (bn_act_op.fused_train: the
            custom op's implementation and backward formula, without torch.library's dispatch),
  eager:    nn.BatchNorm2d-style F.batch_norm + activation in the input dtype (ghost BN: the
            reference's grouped statistics, PyTorch having no ghost kernel),
  compiled: torch.compile of the fp32 reference bn_act_reference (Inductor's split Welford).
On a GPU each variant is also captured in a CUDA graph and timed by replaying it (*_graph
keys): the GPU's time alone, without the host's cost per launch, which dominates small layers
(a training step with CUDA graphs sees these times; one launched op by op may see the first).
Those replays run a layer's forward + backward back to back, so its backward finds the
forward's rows in the L2 cache (a 4.5 MB layer, all of them), where in training every other
layer runs in between. *_as_in_training keys time the forward and the backward as separate
graphs, each replayed after emptying the cache and rewriting its input (x, dy), as a training
step leaves the cache (autograd_as_in_training_ms); the summary's step totals and speed-ups
come in all three timings.
Bandwidth is counted as 3 accesses/element forward and 5 backward (6 and 10 bytes in fp16: the
fused two-pass floor, see shared/docs/kernel-notes.md) for every variant, and shown as a
percentage of a device-to-device copy measured in the same run. GPU timing: CUDA events.
The summary gives each recipe's training-step total (every BN layer, forward + backward) per
variant and the fused op's speed-up over the compiled reference, the issue's >= 1.3x goal.
"""
from __future__ import annotations

import contextlib
import os
import platform
import sys
import time

# This checkout's fastres and kernels/, never an installed copy from another checkout:
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch

# Run as a script without CUDA: Triton's interpreter (this must precede the kernels' @triton.jit
# decoration). Imported (tests, bench/compile_check.py), the importer's setting stands.
if __name__ == "__main__" and not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import torch.nn.functional as F  # noqa: E402
import triton  # noqa: E402

from fastres.config import RECIPES, dataset_key, get_recipe  # noqa: E402
from fastres.errors import Parser  # noqa: E402
from fastres.kernels import bn_act_op  # noqa: E402
from fastres.kernels.bn_act_layer import BatchNormAct2d, activation, bn_act_reference  # noqa: E402
from fastres.model import build_model  # noqa: E402
from fastres.report import output_problem, write_json  # noqa: E402

DEFAULT_RECIPES = ("cifar10-94", "fashion-94", "cifar10-94-speedrun", "fashion-94-resnet9")  # see the docstring
GEOMETRY = {"cifar10": (3, 32), "fashion-mnist": (1, 28)}     # input channels, image size
# A net: (name, batch, [(channels, height, act, alpha, ghost, layers of this shape)])
SMOKE_NETS = [("smoke", 4, [(40, 5, "celu", 0.3, 0, 1), (64, 3, "celu", 0.3, 0, 2)])]
EPS, MOMENTUM = 1e-5, 0.1
# --sweep's stages: each times its knob sets over the best configuration so far (the first over
# the defaults, after the defaults' own point), skipping any already timed. Each new tile, warps,
# stages, acc2d, reverse or finalize setting compiles the kernels anew, so the grid stays at about
# 32 points, and the stages that compile least come before the finalize's, which a sweep out of
# time (gpu_check's --sweep-seconds) drops first. 1: four launch shapes (SWEEP_SHAPES), programs
# per SM, without and with software-pipelined row loops (stages 3), since pipelining changes how
# many programs and how large a tile keep the memory busy. The shapes give a thread 16 or 32
# elements of a tile with 4 or 8 warps, up to 128 rows a tile at C = 64
# (shared/docs/kernel-notes.md puts BLOCK_M at 64-256; tile 2048 has 32 rows there, the default
# 4096 64). At 8192 x 8 warps the backward sums need 182 registers (1 program per SM; 128 with
# acc2d), the statistics 80, no spills, at most 96 KB of shared memory at stages 4
# (bench/compile_check.py, sm_90, triton 3.6). 2: the other pipelining depths, and the
# element-wise reductions (acc2d), each with and without the other. 3: the second pass (apply, dx)
# with more programs than the reductions (pass2_per_sm, in bn_act_op): 8 and 16 per SM, as many as
# its registers let fit (4-10 of 4 warps at tile 2048) or more in a second wave, or the
# reductions' own grid (0), with the reductions' programs per SM as the best has them and at 2
# (fewer partials to finalize, now that the second pass no longer follows them); runtime grids,
# nothing compiles anew. 4: the second pass in reverse grid order (bn_act_kernels.py, "L2 reuse"),
# over the best launch shape, since that shape decides which rows are still cached. 5: the
# finalize tile (block_p partials x finalize_c channels; 128 x 32 gives a C = 64 layer two
# finalize programs, the default 512 x 8 eight), in the finalize kernels or fused into the
# reductions' last programs. Two points run at 3 programs per SM: where a kernel needs more than
# 128 registers at tile 2048 (bench/compile_check.py at 3f13bfc: acc2d at stages 4 on C = 64, 139;
# the statistics kernel with the fused finalize's tail, 142-154), only 3 programs of 4 warps fit
# on an SM, and at 4 per SM the grid's last quarter would run as a second wave, hiding what the
# knob itself does.
SWEEP_SHAPES = ((2048, 4), (4096, 4), (4096, 8), (8192, 8))    # (tile, warps); 4096 x 4: the default
SWEEP_STAGES = [
    [dict(tile=t, warps=w, programs_per_sm=p, stages=s)
     for s in (1, 3) for t, w in SWEEP_SHAPES for p in (2, 4)],
    [*(dict(acc2d=a, stages=s) for a in (0, 1) for s in (2, 3, 4)), dict(acc2d=1, stages=4, programs_per_sm=3)],
    [*(dict(pass2_per_sm=q) for q in (0, 8, 16)), *(dict(programs_per_sm=2, pass2_per_sm=q) for q in (8, 16))],
    [dict(reverse=1)],
    [*(dict(block_p=p, finalize_c=c, fuse_finalize=f) for f in (0, 1) for p, c in ((128, 32), (512, 8))),
     dict(block_p=128, finalize_c=32, fuse_finalize=1, programs_per_sm=3)],
]
SMOKE_STAGES = [
    [dict(tile=2048, warps=4, programs_per_sm=4, stages=1), dict(tile=1024, warps=8, programs_per_sm=2, stages=3)],
    [dict(acc2d=1, stages=2)],
    [dict(pass2_per_sm=16)],
    [dict(reverse=1)],
    [dict(block_p=4, finalize_c=32), dict(block_p=8, finalize_c=8, fuse_finalize=1)],
]


def sweep_reachable(stages: list[list[dict]]) -> list[dict]:
    """Every knob set the staged sweep can end on (and so hand to training): a first-stage
    point, with or without each later stage's changes (bench/compile_check.py compiles them)."""
    configs = [{}]
    for i, knob_list in enumerate(stages):
        configs = [{**c, **k} for c in configs for k in (knob_list if i == 0 else [{}, *knob_list])]
    unique = {tuple(sorted(c.items())): c for c in configs}
    return list(unique.values())


def recipe_layers(name: str) -> tuple:
    """The net of recipe `name` as (name, batch, layers): every BatchNormAct2d of its model as
    (channels, height, act, alpha, ghost, count), in the order a forward pass first meets them."""
    cfg = get_recipe(name).config
    channels, size = GEOMETRY[dataset_key(cfg.dataset)]
    model = build_model(cfg, channels, 10, size).eval()
    counts: dict[tuple, int] = {}

    def hook(module, args):
        n, c, h, w = args[0].shape
        assert h == w, f"{name}: non-square BN input {h}x{w}"
        key = (c, h, module.act, module.alpha, module.ghost_batch)
        counts[key] = counts.get(key, 0) + 1
    for m in model.modules():
        if isinstance(m, BatchNormAct2d):
            m.register_forward_pre_hook(hook)
    with torch.no_grad():
        model(torch.zeros(1, channels, size, size))
    return name, cfg.batch_size, [(*key, n) for key, n in counts.items()]


def recipe_names(arg: str) -> list[str]:
    """--recipes: a comma-separated list, or "all" (every GPU recipe with a fixed image geometry)."""
    if arg == "all":
        return [n for n, r in RECIPES.items()
                if r.config.device != "cpu" and dataset_key(r.config.dataset) in GEOMETRY]
    return [n.strip() for n in arg.split(",") if n.strip()]


class Timer:
    """Mean milliseconds per call of fn: CUDA events on GPU, perf_counter on CPU."""

    def __init__(self, device: str, warmup: int, iters: int):
        self.cuda, self.warmup, self.iters = device == "cuda", warmup, iters

    def __call__(self, fn) -> float:
        for _ in range(self.warmup):
            fn()
        if not self.cuda:
            t = time.perf_counter()
            for _ in range(self.iters):
                fn()
            return (time.perf_counter() - t) * 1e3 / self.iters
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(self.iters):
            fn()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / self.iters


def copy_bandwidth(timer: Timer, device: str, numel: int) -> float:
    """GB/s of dst.copy_(src) in fp16 (one read and one write per element)."""
    src = torch.randn(numel, device=device, dtype=torch.float16)
    dst = torch.empty_like(src)
    ms = timer(lambda: dst.copy_(src))
    return 2 * src.numel() * src.element_size() / ms / 1e6


def variants(act: str, alpha: float, ghost: int, compile_backend: str):
    """name -> f(x, weight, bias, running_mean, running_var) -> y, all in training mode."""
    def fused(x, w, b, rm, rv):     # as BatchNormAct2d runs it, running-statistics update included
        y, mean, _, var = bn_act_op.fused_train(x, w, b, EPS, act, alpha, ghost)
        if ghost:
            mean, var = mean.mean(0), var.mean(0)
        torch._foreach_lerp_([rm, rv], [mean.reshape(-1), var.reshape(-1)], MOMENTUM)
        return y

    def eager(x, w, b, rm, rv):
        if ghost:   # no eager ghost kernel in PyTorch: the reference's grouped statistics
            return bn_act_reference(x, w, b, rm, rv, True, MOMENTUM, EPS, act, alpha, ghost)
        return activation(F.batch_norm(x, rm, rv, w, b, True, MOMENTUM, EPS), act, alpha)

    def reference(x, w, b, rm, rv):
        return bn_act_reference(x, w, b, rm, rv, True, MOMENTUM, EPS, act, alpha, ghost)

    # A fresh wrapper per layer shape, compiled for that static shape.
    compiled = torch.compile(reference, backend=compile_backend, dynamic=False)
    return {"fused": fused, "eager": eager, "compiled": compiled}


def graphed(fn) -> "torch.cuda.CUDAGraph":
    """fn captured in a CUDA graph (after a warm-up on a side stream). A replay launches all of
    fn's kernels at once, so timing replays measures the GPU's work without the host's cost per
    launch (Python, the custom-op dispatcher, Triton's launcher), which small layers pay."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph


def record_launches(fn) -> list[tuple]:
    """Run fn once, recording every Triton launch of the fused op's kernels as
    (name, kernel, grid, args, kwargs, compiled), compiled being what the launch returned (on a
    GPU Triton's compiled kernel, whose code code_facts reads); the recorded tensors stay alive
    for replays."""
    calls = []
    kernels = {n: getattr(bn_act_op.K, n) for n in dir(bn_act_op.K) if n.endswith("_kernel")}

    class Recorder:
        def __init__(self, name, kernel):
            self.name, self.kernel = name, kernel

        def __getitem__(self, grid):
            def launch(*args, **kwargs):
                compiled = self.kernel[grid](*args, **kwargs)
                calls.append((self.name, self.kernel, grid, args, kwargs, compiled))
                return compiled
            return launch
    try:
        for name, kernel in kernels.items():
            setattr(bn_act_op.K, name, Recorder(name, kernel))
        fn()
    finally:
        for name, kernel in kernels.items():
            setattr(bn_act_op.K, name, kernel)
    return calls


def kernel_breakdown(timer, fn, reps: int = 10) -> list[dict]:
    """Microseconds per launch of each Triton kernel that fn launches (in launch order). On a GPU
    each launch is replayed `reps` times in one CUDA graph: the GPU's time for that kernel alone,
    its input in the L2 cache wherever it fits (its own replays put it there), and its compiled
    code's registers and row-loop instructions per element (code_facts). On a CPU (the
    interpreter) a plain timing, which checks the plumbing only. Every kernel of the op
    overwrites its outputs from its inputs, so replaying one alone is safe."""
    rows, reps = [], reps if timer.cuda else 1
    for name, kernel, grid, args, kwargs, compiled in record_launches(fn):
        def launch(kernel=kernel, grid=grid, args=args, kwargs=kwargs):
            for _ in range(reps):
                kernel[grid](*args, **kwargs)
        if timer.cuda:
            graph = graphed(launch)
            ms = timer(graph.replay)
            del graph
        else:
            ms = timer(launch)
        label = name.removesuffix("_kernel").removeprefix("bn_") + ("+finalize" if kwargs.get("FUSE_FIN") else "")
        rows.append({"kernel": label, "grid": list(grid), "us": ms * 1e3 / reps})
        if timer.cuda:
            try:    # a diagnostic: never costs the timing
                rows[-1].update(code_facts(compiled, kwargs))
            except Exception as e:
                rows[-1]["code_error"] = f"{type(e).__name__}: {e}"[:300]
    return rows


def _compile_check():
    """bench/compile_check.py as a module, for its SASS reading (imported on a GPU only: it
    clears TRITON_INTERPRET, which a CPU process of tests needs)."""
    import importlib.util
    name = "bench_compile_check"
    if name not in sys.modules:
        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "compile_check.py")
        spec = importlib.util.spec_from_file_location(name, path)
        sys.modules[name] = importlib.util.module_from_spec(spec)    # dataclasses look it up there
        try:
            spec.loader.exec_module(sys.modules[name])
        except BaseException:
            del sys.modules[name]
            raise
    return sys.modules[name]


def code_facts(compiled, kwargs: dict) -> dict:
    """Registers per thread and, for a kernel with a row loop (a STAGES constant), the loop's
    machine instructions per element of a launched kernel (`compiled`: what kernel[grid](...)
    returns on a GPU), from its cubin's SASS, counted as bench/compile_check.py counts them
    (the cuobjdump bundled with Triton). With the run's issue rate (`issue` in the result),
    python bench/results_table.py --breakdown gives each kernel's share of peak issue."""
    cc = _compile_check()
    tool = cc.cuobjdump()
    if tool is None:
        return {}
    text = cc.disassemble(compiled.asm["cubin"], tool)
    facts = {"registers": cc.resource_usage(text)["registers"]}
    if "STAGES" in kwargs:
        n = cc.loop_instructions(text)
        per_thread = kwargs["BLOCK_M"] * kwargs["BLOCK_C"] / (32 * kwargs.get("num_warps", 4))
        facts["instructions_per_element"] = None if n is None else round(n / per_thread, 2)
    return facts


def issue_rate(device: str) -> dict | None:
    """The GPU's peak instruction issue: SMs x 4 warp-instructions per cycle (4 schedulers per
    SM on Ampere and Hopper) x 32 threads x the SM clock (nvidia-smi's clocks.max.sm); None on
    a CPU or without nvidia-smi."""
    if device != "cuda":
        return None
    import subprocess
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=clocks.max.sm", "--format=csv,noheader,nounits",
                              f"--id={torch.cuda.current_device()}"], capture_output=True, text=True,
                             timeout=30, check=True).stdout
        mhz = float(out.split()[0])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None
    sms = torch.cuda.get_device_properties(torch.cuda.current_device()).multi_processor_count
    return {"sms": sms, "clock_mhz": mhz, "thread_instructions_per_s": sms * 4 * 32 * mhz * 1e6}


def kernels_in_sequence(timer, fn, x, dy, evict, graph=None, event=None, sync=None) -> list[float]:
    """Microseconds each Triton kernel that fn (the fused op's forward + backward) launches adds
    to its pass, in launch order, with the L2 cache as a training step leaves it: each kernel
    finds what the op's kernels before it left cached, where kernel_breakdown's replays of one
    kernel find its own input. The forward's launches form one pass (x written before it), the
    backward's (bn_bwd_*) another (dy written before it); in_sequence_us times them."""
    calls = record_launches(fn)
    launches = [lambda kernel=kernel, grid=grid, args=args, kwargs=kwargs: kernel[grid](*args, **kwargs)
                for _, kernel, grid, args, kwargs, _ in calls]
    forward = sum(not name.startswith("bn_bwd") for name, *_ in calls)
    passes = [(launches[:forward], x), (launches[forward:], dy)]
    return [u for part in in_sequence_us(timer, passes, evict, graph, event, sync) for u in part]


def in_sequence_us(timer, passes, evict, graph=None, event=None, sync=None) -> list[list[float]]:
    """Microseconds each launch adds to its pass. passes: [(launches, written)], the launches
    (calls with no arguments) of one pass in order, and the tensor a training step writes just
    before that pass (x before the forward, dy before the backward). For k = 0..n each pass's
    first k launches are captured as one CUDA graph, each graph starting with the same tiny
    marker kernel, and all are replayed in turn by replay_as_in_training (the cache emptied and
    `written` rewritten before each replay); launch k's time is the difference of the mean
    replay times with k and k - 1 launches. The k-th launch so runs after those before it, as in
    the op, and the graph's own start-up cancels out. A difference of two means: a kernel of a
    few microseconds carries the noise of both."""
    graph = graph or graphed
    marker = torch.zeros(1, device=evict.device)
    graphs = []
    for launches, written in passes:
        for k in range(len(launches) + 1):
            def prefix(launches=launches[:k]):
                marker.add_(1)
                for launch in launches:
                    launch()
            graphs.append((graph(prefix), written))
    means = replay_as_in_training(timer, graphs, evict, event, sync)
    del graphs
    out, i = [], 0
    for launches, _ in passes:
        t = means[i:i + len(launches) + 1]
        out.append([1e3 * (b - a) for a, b in zip(t, t[1:])])
        i += len(launches) + 1
    return out


def rates(fwd: float, both: float, elem: int, copy_gbs: float, suffix: str = "") -> dict:
    """ms, GB/s and % of copy bandwidth of a forward and of a backward timed as (forward +
    backward) - forward: 3 and 5 passes over the activation. A difference <= 0 (timing noise on a
    layer the backward barely outlasts) gives no backward figures (None), never a huge bandwidth."""
    bwd = both - fwd if both > fwd else None
    gbs_f, gbs_b = 3 * elem / fwd / 1e6, None if bwd is None else 5 * elem / bwd / 1e6
    return {f"fwd_ms{suffix}": fwd, f"bwd_ms{suffix}": bwd, f"both_ms{suffix}": both,
            f"fwd_gbs{suffix}": gbs_f, f"bwd_gbs{suffix}": gbs_b, f"fwd_pct_copy{suffix}": 100 * gbs_f / copy_gbs,
            f"bwd_pct_copy{suffix}": None if bwd is None else 100 * gbs_b / copy_gbs}


def layer_tensors(device, dtype, n, c, h, freeze):
    """One BN layer's input x (channels-last), upstream gradient dy, scale w (frozen or not),
    bias b, and the tensors a backward differentiates: x, b and w unless frozen."""
    x = torch.randn(n, c, h, h, device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    w = torch.ones(c, device=device, requires_grad=not freeze)
    b = torch.zeros(c, device=device, requires_grad=True)
    return x, torch.randn_like(x), w, b, [t for t in (x, w, b) if t.requires_grad]


def bench_layer(timer, device, dtype, n, c, h, act, alpha, ghost, freeze, compile_backend, copy_gbs, graphs=False,
                evict=None):
    """One BN layer's row: every variant's forward and backward, launched from the host; with
    `graphs`, as CUDA-graph replays, back to back and (with `evict`, the L2 eviction buffer) with
    the L2 cache as a training step leaves it (*_as_in_training); the fused op's kernel breakdown."""
    x, dy, w, b, inputs = layer_tensors(device, dtype, n, c, h, freeze)
    rm, rv = torch.zeros(c, device=device), torch.ones(c, device=device)
    elem = x.numel() * x.element_size()
    row = {"shape": [n, c, h, h], "act": act, "ghost": ghost, "mbytes": elem / 2**20, "variants": {}}
    for name, fn in variants(act, alpha, ghost, compile_backend).items():
        fwd = timer(lambda: fn(x, w, b, rm, rv))
        both = timer(lambda: torch.autograd.grad(fn(x, w, b, rm, rv), inputs, dy))
        entry = row["variants"][name] = rates(fwd, both, elem, copy_gbs)
        if graphs:
            try:
                graph = graphed(lambda: fn(x, w, b, rm, rv))
                fwd_g = timer(graph.replay)
                graph = graphed(lambda: torch.autograd.grad(fn(x, w, b, rm, rv), inputs, dy))
                both_g = timer(graph.replay)
                del graph
                entry.update({k: v for k, v in rates(fwd_g, both_g, elem, copy_gbs, "_graph").items()
                              if "gbs" not in k})
            except Exception as e:      # a variant that cannot be captured says why in the JSON
                torch.cuda.synchronize()
                entry["graph_error"] = f"{type(e).__name__}: {e}"[:300]
        if graphs and evict is not None:
            try:
                f, bw = autograd_as_in_training_ms(timer, lambda: fn(x, w, b, rm, rv), x, dy, inputs, evict)
                entry.update(fwd_ms_as_in_training=f, bwd_ms_as_in_training=bw, both_ms_as_in_training=f + bw)
            except Exception as e:      # the other timings of the row stay
                torch.cuda.synchronize()
                entry["as_in_training_error"] = f"{type(e).__name__}: {e}"[:300]
        if name == "fused" and (graphs or device == "cpu"):
            try:
                entry["kernels_us"] = kernel_breakdown(
                    timer, lambda: torch.autograd.grad(fn(x, w, b, rm, rv), inputs, dy))
            except Exception as e:      # the breakdown is a diagnostic: it never costs the row
                if timer.cuda:
                    torch.cuda.synchronize()
                entry["kernels_error"] = f"{type(e).__name__}: {e}"[:300]
        if name == "fused" and graphs and evict is not None and "kernels_us" in entry:
            try:
                us = kernels_in_sequence(timer, lambda: torch.autograd.grad(fn(x, w, b, rm, rv), inputs, dy),
                                         x, dy, evict)
                for part, u in zip(entry["kernels_us"], us):
                    part["us_in_sequence"] = u
            except Exception as e:      # likewise
                torch.cuda.synchronize()
                entry["kernels_in_sequence_error"] = f"{type(e).__name__}: {e}"[:300]
    return row


def fused_step_ms(timer, device, dtype, nets, freeze: bool) -> float:
    """Milliseconds of the fused op's forward + backward summed over every BN layer of `nets`:
    on a GPU the replay of each layer's CUDA graph (the GPU's time, which the knobs change)."""
    total = 0.0
    for _, batch, layers in nets:
        for c, h, act, alpha, ghost, count in layers:
            x, dy, w, b, inputs = layer_tensors(device, dtype, batch, c, h, freeze)

            def both():
                y, *_ = bn_act_op.fused_train(x, w, b, EPS, act, alpha, ghost)
                return torch.autograd.grad(y, inputs, dy)
            if timer.cuda:
                graph = graphed(both)
                total += count * timer(graph.replay)
                del graph
            else:
                total += count * timer(both)
    return total


def l2_evict_buffer(device, l2_bytes: int = 0) -> torch.Tensor:
    """A buffer of 4x the L2 cache's size: reading it evicts everything the cache held."""
    if not l2_bytes:        # torch < 2.5 does not report the L2's size: 64 MB, above an H100's 50
        l2_bytes = getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 0) or 64 * 2**20
    return torch.zeros(4 * l2_bytes, dtype=torch.uint8, device=device)


def replay_as_in_training(timer, passes, evict, event=None, sync=None) -> list[float]:
    """Milliseconds per replay of each (graph, written) pass, replayed in turn (warm-up + iters
    rounds) with the L2 cache as a training step leaves it: before each replay, outside the
    timing, a read of `evict` empties the cache, then the pass's input `written` is written in
    place, as the convolution next to a BN layer writes its x (or, backward, its dy)."""
    event, sync = event or torch.cuda.Event, sync or torch.cuda.synchronize
    timed = [[] for _ in passes]
    for i in range(timer.warmup + timer.iters):
        for (graph, written), t in zip(passes, timed):
            evict.sum()
            with torch.no_grad():       # x may be a leaf that requires grad
                written.mul_(1.0)
            start, end = event(enable_timing=True), event(enable_timing=True)
            start.record()
            graph.replay()
            end.record()
            if i >= timer.warmup:
                t.append((start, end))
    sync()
    return [sum(s.elapsed_time(e) for s, e in t) / timer.iters for t in timed]


def _training_cache_ms(timer, device, dtype, nets, freeze: bool, graph=None, event=None, sync=None,
                       l2_bytes: int = 0) -> float:
    """fused_step_ms with the L2 cache as a training step leaves it for each pass, not as the
    layer's own previous replay does. Each layer's forward and backward are separate CUDA graphs
    (the backward is the op's backward implementation, fed the statistics of one forward),
    replayed by replay_as_in_training. Replayed back to back, a layer would instead find its own
    rows in the cache: the forward's last rows at the start of its backward, which in training
    runs every other layer in between. graph, event, sync, l2_bytes: CUDA's and the device's by
    default (tests pass stand-ins)."""
    graph = graph or graphed
    evict = l2_evict_buffer(device, l2_bytes)
    total = 0.0
    with torch.no_grad():
        for _, batch, layers in nets:
            for c, h, act, alpha, ghost, count in layers:
                x, dy, w, b, _ = (t.detach() if isinstance(t, torch.Tensor) else t
                                  for t in layer_tensors(device, dtype, batch, c, h, freeze))
                _, mean, rstd, _ = bn_act_op.fused_train(x, w, b, EPS, act, alpha, ghost)
                passes = [(graph(lambda: bn_act_op.fused_train(x, w, b, EPS, act, alpha, ghost)), x),
                          (graph(lambda: bn_act_op._backward_impl(dy, x, w, b, mean, rstd, EPS, act, alpha,
                                                                  ghost, True, not freeze)), dy)]
                total += count * sum(replay_as_in_training(timer, passes, evict, event, sync))
                del passes
    return total


def autograd_as_in_training_ms(timer, fn, x, dy, inputs, evict, graph=None, event=None,
                               sync=None) -> tuple[float, float]:
    """(forward, backward) milliseconds of any BN variant fn() -> y (fused, eager, compiled) with
    the L2 cache as a training step leaves it: the forward, recorded by autograd, and the
    backward, autograd's gradients of that y for `inputs`, captured as two CUDA graphs and
    replayed by replay_as_in_training. (bench_layer's *_graph timings replay a layer's forward +
    backward back to back, so its backward finds its own forward's rows in L2, and a small
    layer all of its data.)"""
    graph = graph or graphed
    out = []

    def forward():
        out[:] = [fn()]         # y and its autograd graph, whose saved tensors the replays rewrite
    # The replays run one backward many times (retain_graph). AOTAutograd refuses that for a
    # compiled backward it built to reuse ("donate") its saved buffers, which it does once a
    # backward has run without retain_graph, as the host timings' did; with donation off it
    # builds one that keeps them (donation only lets a backward reuse their memory).
    functorch = torch._functorch.config
    no_donation = (functorch.patch(donated_buffer=False) if hasattr(functorch, "donated_buffer")
                   else contextlib.nullcontext())
    with no_donation:
        passes = [(graph(forward), x)]
        passes.append((graph(lambda: torch.autograd.grad(out[0], inputs, dy, retain_graph=True)), dy))
        fwd, bwd = replay_as_in_training(timer, passes, evict, event, sync)
    return fwd, bwd


def step_ms_as_in_training(timer, device, dtype, nets, freeze: bool) -> float:
    """The confirmation's timing: _training_cache_ms on a GPU; the interpreter has no cache to
    set up, so there the plain fused_step_ms."""
    if device != "cuda":
        return fused_step_ms(timer, device, dtype, nets, freeze)
    return _training_cache_ms(timer, device, dtype, nets, freeze)


# After the stages the sweep times the defaults and its best again, in turn, CONFIRM_ROUNDS times:
# the best of ~28 single timings is the luckiest as well as the fastest, so its speed-up over the
# defaults' own point is biased upwards; the confirmed speed-up (means of the fresh timings) is
# not, and gpu_check.sh adopts the best on it. The confirmation also times each layer's forward
# and backward with the L2 cache as a training step leaves it (_training_cache_ms), where the
# grid's back-to-back replays of one layer leave its own rows cached. CONFIRM_TWINS: knobs under
# a written prediction (bench/results/2026-11-28-next-gpu-run-protocol.md, addenda 3 and 4), each
# with two values: the best with the knob at the other value (the first, where the best has
# neither) is timed in the same rounds, so the prediction is judged on a paired comparison.
CONFIRM_ROUNDS = 3
CONFIRM_TWINS = {"reverse": (0, 1), "pass2_per_sm": (0, 16)}


def confirm_twins(best: dict) -> list[dict]:
    """The best with each CONFIRM_TWINS knob moved to its other value, one knob at a time."""
    return [{**best, k: pair[best[k] == pair[0]]} for k, pair in CONFIRM_TWINS.items() if k in best]


def confirm(timer, device, dtype, nets, freeze: bool, configs: list[dict], rounds: int) -> list[dict]:
    """Each full knob set of configs timed `rounds` times (step_ms_as_in_training: the L2 cache
    as a training step leaves it), the sets in turn within each round."""
    times = [[] for _ in configs]
    for _ in range(rounds):
        for config, t in zip(configs, times):
            bn_act_op.GPU_TUNING.update(config)
            t.append(step_ms_as_in_training(timer, device, dtype, nets, freeze))
    return [{"tuning": c, "step_ms": t, "mean_ms": sum(t) / len(t)} for c, t in zip(configs, times)]


def sweep(timer, device, dtype, nets, freeze: bool, stages: list[list[dict]], rounds: int = CONFIRM_ROUNDS,
          seconds: float | None = None) -> dict:
    """Time each stage's knob sets over the best configuration so far (the first stage's over
    the defaults), skipping configurations already timed, then confirm the best against the
    defaults (see CONFIRM_ROUNDS); restore GPU_TUNING afterwards. After `seconds` it starts no
    more knob sets (listed as `not_timed`, the sweep incomplete) but still confirms what it has,
    so that a caller with a deadline keeps time for what follows: a sweep cut by its budget is
    incomplete but not interrupted (not a failure). Interrupted (gpu_check.sh's deadline sends
    SIGINT), it returns what it timed, incomplete, interrupted and unconfirmed."""
    default = dict(bn_act_op.GPU_TUNING)
    rows, complete, confirmed, confirm_error, not_timed = [], True, None, None, []
    interrupted = False
    start = time.perf_counter()

    def fastest():
        return min((r for r in rows if "step_ms" in r), key=lambda r: r["step_ms"], default=None)
    try:
        for stage, knob_list in enumerate(stages, 1):
            base = fastest()["tuning"] if fastest() else default
            if stage == 1:      # the defaults' own point first, listed or not: every speed-up is
                knob_list = [{}, *knob_list]    # against it, and an interrupted sweep still has it
            for knobs in knob_list:
                bn_act_op.GPU_TUNING.update(base, **knobs)
                if any(r["tuning"] == bn_act_op.GPU_TUNING for r in rows):
                    continue
                if seconds is not None and time.perf_counter() - start > seconds and rows:
                    not_timed.append({"stage": stage, "knobs": knobs})
                    continue
                row = {"tuning": dict(bn_act_op.GPU_TUNING), "stage": stage}
                try:
                    row["step_ms"] = fused_step_ms(timer, device, dtype, nets, freeze)
                    print(f"  {knobs}{' at the best so far' if stage > 1 else ''}: {row['step_ms']:.3f} ms")
                except Exception as e:  # one knob set that fails must not cost the others
                    row["error"] = f"{type(e).__name__}: {e}"[:300]
                    print(f"  {knobs}: failed: {row['error']}")
                rows.append(row)
        if fastest() and rounds:
            best = fastest()["tuning"]
            configs = []
            for c in (default, best, *confirm_twins(best)):
                if c not in configs:
                    configs.append(c)
            try:
                confirmed = confirm(timer, device, dtype, nets, freeze, configs, rounds)
            except Exception as e:      # the grid's timings must survive a failed confirmation
                confirm_error = f"{type(e).__name__}: {e}"[:300]
                print(f"  confirmation failed: {confirm_error}")
            for c in confirmed or []:
                print(f"  confirm {c['tuning']}: " + ", ".join(f"{t:.3f}" for t in c["step_ms"]) + " ms")
        if not_timed:
            complete = False
            print(f"sweep: time budget of {seconds:g} s spent; {len(not_timed)} knob sets not timed")
    except KeyboardInterrupt:
        complete, interrupted = False, True
        print(f"sweep interrupted after {len(rows)} configurations")
    finally:
        bn_act_op.GPU_TUNING.clear()
        bn_act_op.GPU_TUNING.update(default)
    # The defaults' time: their own grid point when the grid has it (the same conditions as the
    # others: comparing a minimum over the grid with a separate measurement favours the grid);
    # none if that point failed.
    own = next((r for r in rows if r["tuning"] == default), None)
    base = own.get("step_ms") if own else fused_step_ms(timer, device, dtype, nets, freeze) if complete else None
    out = {"default": default, "default_step_ms": base, "configs": rows, "complete": complete,
           "interrupted": interrupted, "not_timed": not_timed,
           "confirm": confirmed, "confirmed_speedup": None, "confirm_error": confirm_error,
           "confirm_cache": "as in training" if device == "cuda" else "none (interpreter)"}
    best = fastest()
    if base is None or best is None:
        return {**out, "best": None, "best_speedup": None, "best_env": None}
    env = ",".join(f"{k}={v}" for k, v in best["tuning"].items())
    if confirmed:          # the defaults come first; the best is the first with its knobs
        mean_best = next(c["mean_ms"] for c in confirmed if c["tuning"] == best["tuning"])
        out["confirmed_speedup"] = confirmed[0]["mean_ms"] / mean_best
    print(f"sweep: default {default} {base:.3f} ms; best {best['tuning']} {best['step_ms']:.3f} ms "
          f"({base / best['step_ms']:.2f}x; confirmed "
          f"{'-' if out['confirmed_speedup'] is None else format(out['confirmed_speedup'], '.2f')}x); "
          f"FASTRES_BN_TUNING={env}")
    return {**out, "best": best, "best_speedup": base / best["step_ms"], "best_env": env}


def bandwidth_goal(layers: list[dict]) -> tuple[list[dict], str, list[str]]:
    """The layers of >= 32 MB, the timing they are judged on ("_graph": the GPU's time, CUDA-graph
    replays, where every big layer has it; launched from the host, the fused op's layers are
    host-bound, the first H100 run) and those whose fused forward and backward both reach 80% of
    copy bandwidth. A layer without a backward figure (see rates) does not meet the goal."""
    big = [r for r in layers if r["mbytes"] >= 32]
    key = "_graph" if big and all("fwd_pct_copy_graph" in r["variants"]["fused"] for r in big) else ""
    at_80 = [f"{r['net']} {r['shape'][1]}@{r['shape'][2]}" for r in big
             if min(r["variants"]["fused"][f"fwd_pct_copy{key}"], r["variants"]["fused"][f"bwd_pct_copy{key}"] or 0) >= 80]
    return big, key, at_80


def step_summary(net: str, batch: int, totals: dict, graph_totals: dict, train_totals: dict | None = None) -> dict:
    """One recipe's BN work per training step (every layer, forward + backward) per variant,
    and the fused op's speed-up over the compiled reference (goal >= 1.3x); printed and returned.
    graph_totals: CUDA-graph replays of each layer's forward + backward back to back;
    train_totals: of its forward and backward apart, with the L2 cache as training leaves it."""
    speedup = totals["compiled"] / totals["fused"]
    out = {"batch": batch, "step_ms": totals, "fused_vs_compiled": speedup, "goal_1_3x_met": speedup >= 1.3}
    print(f"{net} (batch {batch}), BN fwd+bwd per training step, launched from the host: " +
          ", ".join(f"{k} {v:.3f} ms" for k, v in totals.items()) + f"; fused vs compiled {speedup:.2f}x (goal >= 1.3x)")
    for key, t, how in (("graph", graph_totals, "replayed as CUDA graphs (GPU time only)"),
                        ("as_in_training", train_totals, "with the L2 cache as a training step leaves it")):
        if t:                       # every layer of the net timed this way, every variant
            g = t["compiled"] / t["fused"]
            out.update({f"step_ms_{key}": t, f"fused_vs_compiled_{key}": g, f"goal_1_3x_met_{key}": g >= 1.3})
            print(f"{net}, the same {how}: " + ", ".join(f"{k} {v:.3f} ms" for k, v in t.items())
                  + f"; fused vs compiled {g:.2f}x")
    return out


def main(argv=None) -> dict:
    p = Parser(description=__doc__.splitlines()[0])
    p.add_argument("--out", help="write the results as JSON to this file")
    p.add_argument("--smoke", action="store_true", help="tiny shapes, 1 iteration (CPU plumbing check)")
    p.add_argument("--recipes", default=",".join(DEFAULT_RECIPES),
                   help="comma-separated recipes whose BN layers to time, or all (default %(default)s)")
    p.add_argument("--ghost", type=int, default=None,
                   help="images per BN statistics group for every layer (0 = batch; default: each recipe's)")
    p.add_argument("--trainable-scale", action="store_true", help="train gamma (recipes freeze it)")
    p.add_argument("--iters", type=int, default=50)
    p.add_argument("--sweep", action="store_true", help="time the fused op over SWEEP_STAGES' launch knobs only")
    p.add_argument("--sweep-seconds", type=float, help="--sweep: start no knob set after this many seconds "
                   "(the confirmation still runs)")
    p.add_argument("--no-graphs", action="store_true", help="GPU: skip the CUDA-graph replay timings")
    p.add_argument("--compile-mode", default="inductor", help="torch.compile backend for (c)")
    for knob, default in bn_act_op.GPU_TUNING.items():
        p.add_argument(f"--{knob.replace('_', '-')}", type=int, default=default,
                       help=f"fused-kernel launch knob (default {default})")
    args = p.parse_args(argv)
    if args.out and (problem := output_problem(args.out)):
        p.error(f"--out {problem}")
    if args.iters < 1 or (args.ghost or 0) < 0 or (args.sweep_seconds is not None and args.sweep_seconds <= 0):
        p.error("--iters must be >= 1, --ghost >= 0 and --sweep-seconds > 0")
    if negative := [k for k in bn_act_op.GPU_TUNING if getattr(args, k) < 0]:
        p.error(f"--{negative[0].replace('_', '-')} must not be negative, got {getattr(args, negative[0])}")
    try:                # the knobs as FASTRES_BN_TUNING would give them: the same checks
        bn_act_op.parse_tuning(",".join(f"{k}={getattr(args, k)}" for k in bn_act_op.GPU_TUNING))
    except ValueError as e:
        p.error(str(e).removeprefix("FASTRES_BN_TUNING: "))
    if not recipe_names(args.recipes):
        p.error(f"--recipes {args.recipes!r} names no recipe")
    for name in recipe_names(args.recipes):
        if name not in RECIPES or dataset_key(RECIPES[name].config.dataset) not in GEOMETRY:
            p.error(f"--recipes: {name!r} is not a recipe with fixed image geometry; choose from "
                    f"{', '.join(recipe_names('all'))} or all")
    bn_act_op.GPU_TUNING.update({k: getattr(args, k) for k in bn_act_op.GPU_TUNING})

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and not args.smoke:
        p.error("no CUDA device: only --smoke runs on CPU (Triton's interpreter)")
    dtype = torch.float16 if device == "cuda" else torch.float32
    nets = SMOKE_NETS if args.smoke else [recipe_layers(n) for n in recipe_names(args.recipes)]
    if args.ghost is not None:
        nets = [(net, batch, [(c, h, act, alpha, args.ghost, k) for c, h, act, alpha, _, k in layers])
                for net, batch, layers in nets]
    timer = Timer(device, warmup=1 if args.smoke else 5, iters=1 if args.smoke else args.iters)
    backend = "eager" if args.smoke else args.compile_mode    # compiling on CPU takes minutes
    for knob in ("recompile_limit", "cache_size_limit"):      # one static compile per shape
        if hasattr(torch._dynamo.config, knob):
            setattr(torch._dynamo.config, knob, 256)
    copy_gbs = copy_bandwidth(timer, device, 2**16 if args.smoke else 2**27)
    print(f"device: {torch.cuda.get_device_name() if device == 'cuda' else platform.processor() or 'cpu'}"
          f"  torch {torch.__version__}  triton {triton.__version__}  copy {copy_gbs:.0f} GB/s"
          f"  tuning {bn_act_op.GPU_TUNING}")
    if args.sweep:
        name = torch.cuda.get_device_name() if device == "cuda" else "cpu (interpreter)"
        result = {"benchmark": "bn_act_sweep", "device": name, "torch": torch.__version__,
                  "triton": triton.__version__, "dtype": str(dtype), "ghost_override": args.ghost,
                  "freeze_scale": not args.trainable_scale, "smoke": args.smoke, "nets": nets,
                  "graphs": device == "cuda",        # fused_step_ms times CUDA-graph replays on a GPU
                  **sweep(timer, device, dtype, nets, not args.trainable_scale,
                           SMOKE_STAGES if args.smoke else SWEEP_STAGES, seconds=args.sweep_seconds)}
        return write(result, args.out)
    header = f"{'layer':>30} {'MiB':>6} | " + " | ".join(
        f"{v:>8} fwd/bwd ms   GB/s (%copy)" for v in ("fused", "eager", "compiled"))
    print(header)
    layers, per_recipe = [], {}
    graphs = device == "cuda" and not args.no_graphs
    evict = l2_evict_buffer(device) if graphs else None
    complete = True
    try:
        for net, batch, shapes in nets:
            totals, graph_totals, train_totals, all_graphed, all_trained = {}, {}, {}, graphs, graphs
            for c, h, act, alpha, ghost, count in shapes:
                row = bench_layer(timer, device, dtype, batch, c, h, act, alpha, ghost,
                                  not args.trainable_scale, backend, copy_gbs, graphs=graphs, evict=evict)
                row.update(net=net, count=count)
                layers.append(row)
                all_graphed = all_graphed and all("both_ms_graph" in v for v in row["variants"].values())
                all_trained = all_trained and all("both_ms_as_in_training" in v for v in row["variants"].values())
                cells = []
                for name, v in row["variants"].items():
                    totals[name] = totals.get(name, 0.0) + count * v["both_ms"]
                    if "both_ms_graph" in v:
                        graph_totals[name] = graph_totals.get(name, 0.0) + count * v["both_ms_graph"]
                    if "both_ms_as_in_training" in v:
                        train_totals[name] = train_totals.get(name, 0.0) + count * v["both_ms_as_in_training"]
                    cells.append(f"{v['fwd_ms']:7.3f}/{fmt(v['bwd_ms'], 7, 3)} {v['fwd_gbs']:5.0f}/"
                                 f"{fmt(v['bwd_gbs'], 5, 0)} ({v['fwd_pct_copy']:3.0f}/{fmt(v['bwd_pct_copy'], 3, 0)}%)")
                print(f"{net:>14} {c:4d}@{h:<2d} {act[:4]:>4} x{count} {row['mbytes']:6.1f} | " + " | ".join(cells))
                parts = row["variants"]["fused"].get("kernels_us")
                if parts:
                    print(f"{'fused kernels, us each':>30}: " + ", ".join(f"{k['kernel']} {k['us']:.1f}" for k in parts)
                          + f" (sum {sum(k['us'] for k in parts):.1f})")
                    if all("us_in_sequence" in k for k in parts):
                        print(f"{'in sequence, L2 as in training':>30}: " + ", ".join(
                            f"{k['kernel']} {k['us_in_sequence']:.1f}" for k in parts)
                              + f" (sum {sum(k['us_in_sequence'] for k in parts):.1f})")
            per_recipe[net] = step_summary(net, batch, totals, graph_totals if all_graphed else {},
                                           train_totals if all_trained else {})
    except KeyboardInterrupt:       # gpu_check.sh's deadline sends SIGINT: keep what finished
        complete = False
        print(f"interrupted: writing the {len(layers)} layers measured so far "
              f"(step totals only for the recipes finished: {', '.join(per_recipe) or 'none'})")
    big, key, at_80 = bandwidth_goal(layers)
    summary = {"per_recipe": per_recipe,
               "goal_1_3x_met": bool(per_recipe) and all(r["goal_1_3x_met"] for r in per_recipe.values()),
               "layers_ge_32MB": len(big), "layers_ge_32MB_at_80pct_copy": at_80,
               "pct_copy_timing": "CUDA graphs" if key else "launched from the host"}
    for how in ("graph", "as_in_training"):
        if per_recipe and all(f"goal_1_3x_met_{how}" in r for r in per_recipe.values()):
            summary[f"goal_1_3x_met_{how}"] = all(r[f"goal_1_3x_met_{how}"] for r in per_recipe.values())
    print(f"layers >= 32 MB at >= 80% of copy bandwidth (fwd and bwd, {summary['pct_copy_timing']}): "
          f"{len(at_80)}/{len(big)} {at_80}")
    result = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu (interpreter)",
              "torch": torch.__version__, "triton": triton.__version__, "dtype": str(dtype),
              "ghost_override": args.ghost, "tuning": dict(bn_act_op.GPU_TUNING),
              "freeze_scale": not args.trainable_scale, "smoke": args.smoke, "copy_gbs": copy_gbs,
              "issue": issue_rate(device), "complete": complete, "layers": layers, "summary": summary}
    return write(result, args.out)


def fmt(value: float | None, width: int, digits: int) -> str:
    return "-".rjust(width) if value is None else f"{value:{width}.{digits}f}"


def write(result: dict, out: str | None) -> dict:
    if out:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        print(f"wrote {write_json(out, result)}")
    return result


def exit_status(result: dict) -> int:
    """1 for a run cut short by an interrupt (or a benchmark with layers left), else 0: a sweep
    that its --sweep-seconds budget stopped early did what it was asked."""
    return int(result.get("interrupted", not result.get("complete", True)))


if __name__ == "__main__":
    sys.exit(exit_status(main()))
