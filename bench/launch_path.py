"""Triton's launch path on the host, without a GPU: kernel[grid](...) against the compiled launcher.

    python bench/launch_path.py --out /tmp/launch-path.json    # any machine, ~10 s (one sm_90 compile)

kernel[grid](...) binds and specialises its arguments, builds its cache key, finds the compiled
kernel and only then calls the compiled kernel's launcher; compiled[grid](*args) (the object the
first call returns) calls the launcher directly, with every kernel parameter positional. Here
Triton's driver is replaced by a stand-in whose launcher records its arguments and launches
nothing (CPU tensors, an sm_90 target: the kernel is compiled, never run), so the two times are
the Python each path runs on this host before the launcher's own C code (converting the pointers,
cuLaunchKernelEx), which both pay on a GPU. Their difference bounds what a launch cache that
skipped kernel[grid]'s binding could save per launch; a third time is such a cache's (LaunchCache,
a design measured here: its key, built from every argument on each launch, costs part of what
it saves). bench/host_overhead.py times the first two on a GPU. The kernel is the forward's
apply kernel with the arguments of a C = 256 layer.
"""
from __future__ import annotations

import os
import sys
import time

# This checkout's fastres and kernels/, never an installed copy from another checkout:
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fastres.errors import Parser  # noqa: E402
from fastres.report import environment, output_problem, write_json  # noqa: E402
from fastres.kernels.bn_act_op import compiled_launcher as launcher  # noqa: E402


def launch_args(kernel, args: tuple, kwargs: dict) -> list:
    """A launch's arguments as Triton's compiled launcher takes them: every parameter of the
    kernel in order, constexprs included (kernel[grid](...) binds them so on each call); launch
    options such as num_warps, which are not parameters, left out."""
    return [*args, *(kwargs[name] for name in kernel.arg_names[len(args):])]


class StandInDriver:
    """Triton's active driver for an sm_90 GPU that is not there: kernels compile, launches run
    nothing and, while `record` is true, append their arguments to `calls`.

    Off by default, for timing: a launcher that kept every launch's arguments kept every tensor
    a timed loop allocated alive and gave Python's garbage collector a list of ~10^5 tuples to walk
    (2026-12-04: a 6-layer chain with the launch cache took 1238 us a step recording, 779 us not)."""

    def __init__(self, record: bool = False):
        from triton.backends.compiler import GPUTarget
        self.target, self.calls, self.record = GPUTarget("cuda", 90, 32), [], record
        self.utils = self

    def get_current_device(self):
        return 0

    def get_current_stream(self, device):
        return 0

    def get_current_target(self):
        return self.target

    def get_device_properties(self, device):
        return {"max_shared_mem": 227 * 1024, "multiprocessor_count": 132}

    def load_binary(self, name, kernel, shared, device):
        return object(), 0, 0, 0, 1024      # module (loaded: not None), function, registers, spills, max threads

    def launcher_cls(self, src, metadata):
        def launch(*args):
            if self.record:
                self.calls.append(args)
        return launch


class LaunchCache:
    """kernel[grid](...) with a cache in front (a design measured here, not used by the op): the
    compiled launcher of each launch, keyed by the grid, the current device and every argument
    as far as Triton specialises on it or finer (a tensor's dtype and 16-byte alignment, an
    int's value, the constexprs and options by name). A miss launches through kernel[grid],
    which compiles or finds the kernel for the arguments' own specialisation."""

    def __init__(self, kernel, driver):
        self.kernel, self.driver, self.runners = kernel, driver, {}

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            import torch
            device = self.driver.active.get_current_device()
            key = (grid, device, *[(a.dtype, a.data_ptr() % 16 == 0) if isinstance(a, torch.Tensor) else a
                                   for a in args], *kwargs.items())
            hit = self.runners.get(key)
            if hit is None:
                compiled = self.kernel[grid](*args, **kwargs)
                self.runners[key] = launcher(compiled, grid), self.kernel.arg_names[len(args):]
                return compiled
            run, names = hit
            run(*args, *(kwargs[name] for name in names), stream=self.driver.active.get_current_stream(device))
        return launch


def per_call_us(fn, iters: int, rounds: int = 5, sync=lambda: None) -> float:
    """Microseconds per call of fn: the fastest of `rounds` rounds, after warm-up calls; sync
    (a GPU's torch.cuda.synchronize) before and after each round."""
    for _ in range(max(3, iters // 10)):
        fn()
    best = float("inf")
    for _ in range(rounds):
        sync()
        t0 = time.perf_counter()
        for _ in range(iters):
            fn()
        sync()
        best = min(best, (time.perf_counter() - t0) / iters * 1e6)
    return best


def main(argv=None) -> dict:
    p = Parser(description=__doc__.splitlines()[0])
    p.add_argument("--iters", type=int, default=20000)
    p.add_argument("--out", default="", help="write the result as JSON here")
    args = p.parse_args(argv)
    if args.out and (problem := output_problem(args.out)):
        p.error(f"--out {problem}")
    if args.iters < 1:
        p.error(f"--iters must be positive, got {args.iters}")
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        p.error("TRITON_INTERPRET is set: the interpreter compiles nothing; unset it")
    import torch
    import triton
    from triton.runtime.driver import driver

    from fastres.kernels import bn_act_kernels as K     # here: not under an interpreter (checked above)

    stand_in, previous = StandInDriver(record=True), getattr(driver, "_active", None)
    driver.set_active(stand_in)
    try:
        c, rows = 256, 72           # a C = 256 layer's [M, C] view; 8 slabs of 16 rows (the values only feed the key)
        base = torch.randn(rows * c + 8, dtype=torch.float16)
        x = base[:rows * c].view(rows, c)
        vectors = [torch.ones(c) for _ in range(4)]
        kernel, grid = K.bn_apply_kernel, (8, 2)
        call = (x, torch.empty_like(x), *vectors, rows, c, rows, 8, 16, 1e-5, 1.0)
        options = dict(ACT=K.ACT_CODES["gelu"], FROM_VAR=False, BLOCK_M=16, BLOCK_C=128, STAGES=3, REVERSE=False,
                       num_warps=4, enable_fp_fusion=True)
        try:
            compiled = kernel[grid](*call, **options)
        except (AttributeError, TypeError, ValueError) as e:      # written against triton 3.6's driver
            print(f"launch_path: triton {triton.__version__}'s driver interface does not fit the stand-in "
                  f"({type(e).__name__}: {e})", file=sys.stderr)
            sys.exit(3)
        bound = launch_args(kernel, call, options)
        run, cache = launcher(compiled, grid), LaunchCache(kernel, driver)
        cache[grid](*call, **options)         # a miss: kernel[grid] launches, the cache keeps its launcher
        del stand_in.calls[:]
        run(*bound)
        cache[grid](*call, **options)         # a hit
        kernel[grid](*call, **options)
        # The launcher's arguments: the grid, the stream, ..., then the kernel's.
        direct, cached, jit = stand_in.calls
        for path, got in (("the compiled launcher", direct), ("the launch cache", cached)):
            if got[:3] != jit[:3] or len(got) != len(jit) or any(a is not b for a, b in zip(got[-len(bound):],
                                                                                        jit[-len(bound):])):
                raise RuntimeError(f"{path} called the launcher with other arguments than kernel[grid] gives it")
        # A view 2 bytes into x is not 16-byte aligned: a key of its own, compiled anew by kernel[grid].
        shifted = base[1:1 + rows * c].view(rows, c)
        cache[grid](shifted, *call[1:], **options)
        if len(cache.runners) != 2:
            raise RuntimeError("the launch cache gave an unaligned pointer an aligned pointer's launcher")
        stand_in.record = False         # the timed launches keep nothing
        us = {"kernel_grid": per_call_us(lambda: kernel[grid](*call, **options), args.iters),
              "compiled_launcher": per_call_us(lambda: run(*bound), args.iters),
              "launch_cache": per_call_us(lambda: cache[grid](*call, **options), args.iters)}
    finally:        # reset_active() would look for a real driver, which a CPU-only machine lacks
        driver._active = previous
    result = {"benchmark": "launch_path", "env": environment(torch.device("cpu")), "iters": args.iters,
              "kernel": kernel.fn.__name__, "parameters": len(bound), "us": us}
    print(f"{kernel.fn.__name__} ({len(bound)} parameters), Python per launch with a no-op driver: "
          f"kernel[grid](...) {us['kernel_grid']:.2f} us, the compiled launcher {us['compiled_launcher']:.2f} us, "
          f"through a launch cache {us['launch_cache']:.2f} us")
    if args.out:
        print(f"wrote {write_json(args.out, result)}")
    return result


if __name__ == "__main__":
    main()
