"""Host (CPU) cost per BN layer of a training step: the fused op against PyTorch's BN.

    python bench/host_overhead.py --out /tmp/host-overhead.json    # GPU or CPU, ~1 min

Small layers are bound by what the host spends per layer (Python, the dispatcher, the custom
op's autograd wrapper, Triton's launcher), not by the GPU. This times forward + backward of a
chain of 1 and of 6 BatchNormAct2d layers on a tiny input (8 x 256 x 3 x 3), so the GPU work is
negligible and the wall time per iteration is the host's; the difference per extra layer is one
layer's host cost, for the fused op and the PyTorch reference, eager and compiled. The two chains
are timed in turn, in rounds, and the fastest round of each counts (see per_layer).
On a CPU the Triton kernels are replaced by no-ops (the interpreter would time Python running
the kernels): the fused figures are then the host cost without Triton's launcher, while the
reference figures include its (tiny) CPU compute. A CPU also runs "fused, stand-in driver": the
real kernels, compiled for sm_90 and launched on bench/launch_path.py's stand-in driver, which
runs nothing, so the cost includes Triton's own launch path (kernel[grid]'s binding,
specialisation and cache lookup) but not its launcher's C code (not under TRITON_INTERPRET); and
the same with the launch_cache knob ("fused, stand-in driver, launch cache").

On a GPU the compiled chain also runs with FASTRES_BN_OP=triton_op ("fused, triton_op": Inductor
launches the kernels itself), the fused op also runs with its fused finalize, eager and
compiled ("fused, fused finalize": 4 Triton launches per layer instead of 6), and with the
launch_cache knob ("fused, launch cache": launches straight through the compiled kernels'
launchers after the first call, see bn_act_op._LaunchCache), and two more
measurements split the fused op's cost: the same chains with the Triton kernels replaced by
no-ops ("fused, kernels stubbed": the Python and dispatch around them), and the host time of
one Triton launch (the forward's apply kernel, launched alone with its recorded arguments), of
the same launch through the compiled kernel's own launcher (without kernel[grid]'s argument
binding and cache lookup), of one allocation of the layer's output, and of one PyTorch
elementwise launch on the same tensor. On both, the op's forward and backward implementations
are also timed alone with the kernels stubbed ("impl_us": its Python and allocations, the part
of a stubbed layer that is not autograd's, the module's or the running statistics').

Compare a training step's host time (layers x this cost + the rest) with its GPU time: when the
host is slower, the step is host-bound and CUDA graphs (--compile-mode reduce-overhead) or fewer
host-side calls per layer pay off, not faster kernels.
"""
from __future__ import annotations

import importlib.util
import os
import sys
import time

# This checkout's fastres and kernels/, never an installed copy from another checkout:
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch

# No TRITON_INTERPRET here: on a CPU the kernels are stubbed, or compiled for an sm_90 GPU that is
# not there and launched on a stand-in driver (the "stand-in driver" variant), never interpreted.
from fastres.errors import Parser  # noqa: E402
from fastres.kernels import bn_act_kernels, bn_act_op  # noqa: E402
from fastres.kernels.bn_act_layer import BatchNormAct2d  # noqa: E402
from fastres.report import environment, output_problem, write_json  # noqa: E402


def _sibling(name: str):
    """bench/NAME.py as a module (bench/ holds scripts, not a package)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


launch_path = _sibling("launch_path")     # launch_args, launcher, per_call_us

ROUNDS = 5      # each chain's iterations in rounds, the two chains in turn


class _NoLaunch:
    """kernel[grid](...) that does nothing: stands in for a Triton kernel on a CPU."""

    def __getitem__(self, grid):
        return lambda *args, **kwargs: None


KERNELS = {name: getattr(bn_act_kernels, name) for name in dir(bn_act_kernels) if name.endswith("_kernel")}


def stub_kernels():
    for name in KERNELS:
        setattr(bn_act_kernels, name, _NoLaunch())


def interpreted() -> bool:
    """Whether Triton's interpreter runs the kernels (TRITON_INTERPRET, as the tests set it)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def stand_in_rounds(x, dy, compiled: bool, iters: int) -> dict:
    """chain_rounds for the fused op on a CPU with its real kernels launched on launch_path's
    stand-in driver (compiled for sm_90 on first use, launched as no-ops): the host cost with
    Triton's own launch path (binding, specialisation, cache lookup), without its launcher's C
    code. The kernels are stubbed again afterwards."""
    from triton.runtime.driver import driver
    previous = getattr(driver, "_active", None)
    for name, kernel in KERNELS.items():
        setattr(bn_act_kernels, name, kernel)
    driver.set_active(launch_path.StandInDriver())
    try:
        return chain_rounds("triton", x.device.type, x, dy, compiled, iters)
    finally:
        driver._active = previous       # reset_active() would look for a real driver
        stub_kernels()


def launch_us(x: torch.Tensor, iters: int) -> tuple[dict, str | None]:
    """Host microseconds per call (GPU) of: one of the op's Triton kernels, launched alone with the
    arguments the forward gave it; the same launch through the compiled kernel's own launcher,
    which kernel[grid](...) reaches after binding and specialising the arguments and finding the
    compiled kernel in its cache (what a launch that skipped those steps could cost; timed only
    once its output matched kernel[grid]'s bit for bit); one allocation of the layer's output
    (torch.empty, channels-last; each layer allocates 13 tensors, forward + backward); and
    PyTorch's in-place add on the same tensor, for scale. Also a note on why the compiled
    launcher was not timed, or None."""
    real, recorded = bn_act_kernels.bn_apply_kernel, []

    class Recorder:
        def __getitem__(self, grid):
            def launch(*args, **kwargs):
                recorded.append((grid, args, kwargs, real[grid](*args, **kwargs)))
            return launch
    c = x.shape[1]
    w, b = torch.ones(c, device=x.device), torch.zeros(c, device=x.device)
    bn_act_kernels.bn_apply_kernel = Recorder()
    try:
        bn_act_op._train_impl(x.detach(), w, b, 1e-5, "gelu", 1.0, 0)
    finally:
        bn_act_kernels.bn_apply_kernel = real
    grid, args, kwargs, compiled = recorded[0]
    y = x.detach().clone()
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)     # CPU: the tests' plumbing check
    calls = [("triton_apply_kernel", lambda: real[grid](*args, **kwargs))]
    note = "no compiled kernel (Triton's interpreter)" if not hasattr(compiled, "run") else None
    if note is None:
        try:
            runner, bound, out = (launch_path.launcher(compiled, grid), launch_path.launch_args(real, args, kwargs),
                                  args[1])
            want = out.clone()
            out.zero_()
            runner(*bound)
            sync()
            if torch.equal(out, want):
                calls.append(("triton_compiled_launcher", lambda: runner(*bound)))
            else:
                note = "the compiled launcher's output differed from kernel[grid]'s"
        except Exception as e:      # a diagnostic: never costs the other timings
            note = f"compiled launcher: {type(e).__name__}: {e}"[:300]
    calls += [("torch_empty", lambda: bn_act_op._empty_cl(x)), ("torch_add_", lambda: y.add_(0))]
    return per_call_us(calls, iters, sync), note


def per_call_us(calls: list, iters: int, sync) -> dict:
    """{name: host microseconds per call} of each (name, fn): one timed pass of iters calls after
    a few warm-up calls."""
    return {name: launch_path.per_call_us(fn, iters, rounds=1, sync=sync) for name, fn in calls}


def impl_us(x: torch.Tensor, dy: torch.Tensor, iters: int) -> dict:
    """Host microseconds per call of the op's forward and backward implementations (bn_act_op's
    _train_impl, _backward_impl as the chain's layers call them: GELU, frozen scale), with the
    Triton kernels stubbed (stub_kernels first): the Python and the allocations of one layer's
    op, without autograd, the module or the running statistics' update."""
    c = x.shape[1]
    w, b, xd = torch.ones(c, device=x.device), torch.zeros(c, device=x.device), x.detach()
    _, mean, rstd, _ = bn_act_op._train_impl(xd, w, b, 1e-5, "gelu", 1.0, 0)    # stubbed: never read
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    return per_call_us([("train_impl", lambda: bn_act_op._train_impl(xd, w, b, 1e-5, "gelu", 1.0, 0)),
                        ("backward_impl", lambda: bn_act_op._backward_impl(dy, xd, w, b, mean, rstd, 1e-5, "gelu",
                                                                           1.0, 0, True, False))], iters, sync)


def chain(layers: int, backend: str, device: str) -> torch.nn.Sequential:
    net = torch.nn.Sequential(*(BatchNormAct2d(256, act="gelu", freeze_scale=True) for _ in range(layers)))
    for m in net:
        m.backend = backend
    return net.to(device)


def warm_step(net, x, dy, compiled: bool, iters: int):
    """net's forward + backward (compiled or not) as a function, run a few times first."""
    fn = torch.compile(net) if compiled else net
    params = [x] + [m.bias for m in net]

    def step():
        torch.autograd.grad(fn(x), params, dy)
    for _ in range(max(3, iters // 10)):
        step()
    return step


def wall_us(step, iters: int, cuda: bool) -> float:
    """Microseconds per call of step, wall clock."""
    if cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    if cuda:
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / iters * 1e6


def per_layer(one: list[float], six: list[float]) -> dict:
    """One layer's host cost from rounds of the 1- and 6-layer chains timed in turn: the fastest
    round of each (a busy host only slows a round down). Timed once each, one after the other, a
    load spike on the 1-layer chain made the cost per layer negative (2026-12-03 audit); a
    difference that is still <= 0 is noise and gives None."""
    a, b = min(one), min(six)
    return {"us_1_layer": a, "us_6_layers": b, "us_per_layer": (b - a) / 5 if b > a else None,
            "rounds_us_1_layer": one, "rounds_us_6_layers": six}


def chain_rounds(backend: str, device: str, x, dy, compiled: bool, iters: int, rounds: int = ROUNDS) -> dict:
    """The 1- and 6-layer chains, compiled afresh (no stale op choice), timed in turn for `rounds`
    rounds of iters / rounds iterations each."""
    if compiled:
        torch._dynamo.reset()
    steps = [warm_step(chain(k, backend, device), x, dy, compiled, iters) for k in (1, 6)]
    times = [[], []]
    for _ in range(rounds):
        for step, t in zip(steps, times):
            t.append(wall_us(step, max(1, iters // rounds), x.is_cuda))
    return per_layer(*times)


def main(argv=None) -> dict:
    p = Parser(description=__doc__.splitlines()[0])
    p.add_argument("--iters", type=int, default=500)
    p.add_argument("--no-compile", action="store_true", help="eager variants only")
    p.add_argument("--out", default="", help="write the result as JSON here")
    args = p.parse_args(argv)
    if args.out and (problem := output_problem(args.out)):
        p.error(f"--out {problem}")
    if args.iters < 1:
        p.error(f"--iters must be positive, got {args.iters}")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        stub_kernels()
    x = torch.randn(8, 256, 3, 3, device=device).contiguous(memory_format=torch.channels_last).requires_grad_()
    dy = torch.randn_like(x)
    rows, (launches, launch_note) = [], launch_us(x, args.iters) if device == "cuda" else (None, None)
    modes = (False,) if args.no_compile else (False, True)
    # (name, BN backend, modes, launch knobs over GPU_TUNING for this variant)
    variants = [("fused", "triton", modes, {}), ("reference", "reference", modes, {})]
    if device == "cuda" and bn_act_op.HAS_TRITON_OP and not args.no_compile:
        variants.append(("fused, triton_op", "triton", (True,), {}))     # FASTRES_BN_OP=triton_op
    if device == "cuda":
        variants.append(("fused, fused finalize", "triton", modes, {"fuse_finalize": 1}))
        variants.append(("fused, launch cache", "triton", modes, {"launch_cache": 1}))
        variants.append(("fused, kernels stubbed", "triton", modes, {}))
    elif not interpreted():
        variants.append(("fused, stand-in driver", "triton", modes, {}))
        variants.append(("fused, stand-in driver, launch cache", "triton", modes, {"launch_cache": 1}))
    default_tuning = dict(bn_act_op.GPU_TUNING)
    for variant, backend, compiled_modes, tuning in variants:
        bn_act_op.BN_OP = "triton_op" if variant == "fused, triton_op" else "custom_op"
        bn_act_op.GPU_TUNING.update(default_tuning, **tuning)
        if variant == "fused, kernels stubbed":
            stub_kernels()
        for compiled in compiled_modes:
            mode = "compiled" if compiled else "eager"
            try:
                cost = (stand_in_rounds(x, dy, compiled, args.iters) if variant.startswith("fused, stand-in driver")
                        else chain_rounds(backend, device, x, dy, compiled, args.iters))
            except Exception as e:      # an experimental variant (triton_op) must not cost the others
                rows.append({"variant": variant, "compiled": compiled, "error": f"{type(e).__name__}: {e}"[:300]})
                print(f"{variant:>36} {mode:>8}: failed: {rows[-1]['error']}")
                continue
            row = {"variant": variant, "compiled": compiled, "bn_tuning": dict(bn_act_op.GPU_TUNING), **cost}
            rows.append(row)
            per = "   -   " if row["us_per_layer"] is None else f"{row['us_per_layer']:6.1f} us"
            print(f"{row['variant']:>36} {mode:>8}: {per} per layer (fwd+bwd; 1 layer {row['us_1_layer']:.0f} us, "
                  f"6 layers {row['us_6_layers']:.0f} us; fastest of {ROUNDS} rounds in turn)")
    bn_act_op.GPU_TUNING.update(default_tuning)
    stub_kernels()      # already on a CPU, and on a GPU after the stubbed variant
    impl = impl_us(x, dy, args.iters)
    print("host us per call, kernels stubbed: " + ", ".join(f"{k} {v:.1f}" for k, v in impl.items()) +
          " (the op's Python and allocations; the rest of a layer's cost is autograd's, the module's and"
          " the running statistics')")
    result = {"benchmark": "host_overhead", "env": environment(torch.device(device)), "iters": args.iters,
              "kernels_stubbed": device == "cpu", "input": list(x.shape), "rows": rows,
              "impl_us": impl}
    if launches:
        result["launch_us"] = launches
        print("host us per call: " + ", ".join(f"{k} {v:.1f}" for k, v in launches.items()) +
              " (the fused op launches 6 Triton kernels per layer, forward + backward; 4 with fuse_finalize)")
    if launch_note:
        result["launch_note"] = launch_note
        print(f"triton_compiled_launcher not timed: {launch_note}")
    if args.out:
        print(f"wrote {write_json(args.out, result)}")
    return result


if __name__ == "__main__":
    main()
