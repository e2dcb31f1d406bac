"""torch.library registration of the fused BatchNorm + activation kernels.

Tested by `OMP_NUM_THREADS=1 pytest tests/test_bn_act.py` (CPU: TRITON_INTERPRET=1, set by
tests/conftest.py before this module is imported), timed by `python bench/kernels.py`.

Ops (namespace `fastres`), all functional:
  bn_act_train(x, weight, bias, eps, act, alpha, ghost_batch) -> (y, mean, rstd, var_unbiased)
      x is fp16, bf16 or fp32 (the kernels compute in fp32; other dtypes are refused);
      y is channels-last in x's dtype; mean/rstd/var_unbiased are fp32 [G, C] (G statistics
      groups: ceil(N / ghost_batch) with ghost batch norm, else 1). Differentiable in y only.
  bn_act_eval(x, weight, bias, running_mean, running_var, eps, act, alpha) -> y
  bn_act_backward(dy, x, weight, bias, mean, rstd, ...) -> (dx, dweight, dbias)
      recomputes x_hat and z from x, mean, rstd: the forward saves nothing else.
The running statistics are updated by BatchNormAct2d with an in-place torch op on the op's
(non-differentiable) mean and unbiased variance (torch._foreach_lerp_: one launch eager, one
small kernel compiled, no custom-op dispatch; a separate mutating op cost ~20 us of host time
per layer, and torch.library refuses an autograd formula for an op that mutates its inputs).
Each op has a fake (meta) implementation returning the real strides, so torch.compile traces a
net using them with fullgraph=True, and an autograd formula where it is differentiable.
BatchNormAct2d calls fused_train / fused_eval: the ops while torch.compile traces, and the same
implementations directly in eager mode (torch.library's dispatch layers cost host time).
With FASTRES_BN_OP=triton_op (torch >= 2.6) torch.compile traces triton_op twins of the three
ops instead (bn_act_train_t, ...), whose kernels Inductor launches itself (see below).
"""
# No `from __future__ import annotations` here: torch < 2.5's custom_op reads the annotations
# of the op functions as real types and rejects strings ("unsupported type Tensor").
import functools
import os

import torch
import triton
from torch import Tensor

from . import bn_act_kernels as K

_CL = torch.channels_last
DTYPES = (torch.float16, torch.bfloat16, torch.float32)     # the activations the kernels load and store


# ---------------------------------------------------------------- launch geometry
@functools.lru_cache(maxsize=None)
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


# GPU launch knobs (bench/kernels.py --tile/--warps/... and the environment variable
# FASTRES_BN_TUNING='tile=4096,warps=8' override them; bench/kernels.py --sweep times a grid).
# Register counts from bench/compile_check.py (sm_90 cubins of every launch, triton 3.6, no GPU
# needed): at 16 fp32 elements per thread (tile 2048, 4 warps) the recipes' heaviest kernel, the
# GELU backward reduction, needs 127 registers, so 4 programs of 4 warps fit on an SM (the
# tests' unaligned shapes take the dx kernel to 149: 3); at 32 per thread (tile 4096) the
# reduction needs 186-204 (2 programs) (bench/results/2026-11-27-cpu-amd-epyc-2c-5dc9272-compile-
# check.json). No launch spills at any knob set bench/kernels.py's sweep can reach
# (bench/results/2026-12-02-cpu-amd-epyc-2c-ff7bfb8-compile-check.json, reverse included).
# acc2d (0 or 1): the reductions (forward statistics, backward sums) accumulate element-wise in
# 2-D tiles and reduce once per program instead of once per tile (bn_stats_kernel's TWO_D).
# block_p x finalize_c: the tile in which a finalize program walks the slab partials (one
# program per finalize_c channels per group; fewer, longer walks with wider tiles). acc2d and
# finalize_c also apply in the interpreter, so the CPU tests cover them.
# stages: the row loops' software-pipelining depth (bn_act_kernels.py, "Memory-level
# parallelism"): 1 waits on each tile's load; >= 2 keeps stages - 1 tiles' loads in flight,
# in (stages - 1) x the tile of shared memory per input.
# fuse_finalize (0 or 1): the reduction kernels' last program per group and channel block
# combines the partials (bn_act_kernels.py, "Fused finalize"), in the finalize kernels' tiles
# and order: one launch fewer forward and backward (custom ops and eager calls; the
# triton_op twins launch the finalize kernels). The tail's registers count for the whole kernel:
# at tile 2048 the forward statistics kernel needs up to 154 instead of 72 (sm_90,
# triton 3.6; bench/results/2026-12-02-cpu-amd-epyc-2c-aa7c622-compile-check.json).
# reverse (0 or 1): the second pass over the data (apply, dx) runs its programs in reverse grid
# order, so that it first reads what the first pass read last, still in the L2 cache
# (bn_act_kernels.py, "L2 reuse").
# pass2_per_sm: programs per SM of the second pass (apply, dx; eval's apply), 0 = programs_per_sm.
# The reductions' grid sets how many partials the finalize combines; apply and dx write no
# partials, so their grid can be as large as occupancy allows (their slabs need not match the
# reductions': each element's result is the same whichever program computes it). At tile 2048
# on cifar10-94's layers, apply needs 48-80 registers and dx 72-115 (ff7bfb8's compile
# check): 4-10 programs of 4 warps fit on an SM, each with one tile's loads in flight (stages=1).
# launch_cache (0 or 1), host side only: the custom ops' launches after the first call with the
# same key go straight to each compiled kernel's launcher (see _LaunchCache), skipping
# kernel[grid]'s argument binding: on a 2-core EPYC (2026-12-04, bench/host_overhead.py's
# stand-in driver) Triton's Python costs ~14 us a launch, ~5 us with the cache. Off until a GPU
# run measures it; the interpreter has no compiled kernels, so there it changes nothing.
#
# The defaults are the sweep's best on an H200 (2026-12-04, 03b972c, cifar10-94's BN layers,
# bench/results/2026-12-04-h200-03b972c-kernel-sweep.json): the summed BN step, forward and
# backward as CUDA graphs with the L2 cache as in training, 0.468 ms against 0.887 ms for the
# former defaults (tile 2048, programs_per_sm 4, block_p 128, acc2d 0, finalize_c 32,
# stages 1, pass2_per_sm 0), means of 3 rounds. In the grid: tile 4096 and stages 3 together
# 0.843 -> 0.613 ms, then acc2d 0.510, programs_per_sm 2 with pass2_per_sm 8 0.461, the
# finalize tile 512 x 8 0.449; reverse and fuse_finalize gained nothing. Not measured on an H100.
GPU_TUNING = {"tile": 4096, "warps": 4, "programs_per_sm": 2, "block_p": 512, "acc2d": 1, "finalize_c": 8,
              "stages": 3, "fuse_finalize": 0, "reverse": 0, "pass2_per_sm": 8, "launch_cache": 0}


SWITCHES = ("acc2d", "fuse_finalize", "reverse", "launch_cache")      # the knobs that are 0 or 1


def parse_tuning(text: str) -> dict:
    """'tile=4096,warps=8' -> {'tile': 4096, 'warps': 8}: knobs of GPU_TUNING, as the environment
    variable FASTRES_BN_TUNING gives them (bench/gpu_check.sh sets it from a tuning sweep).
    tile, warps, block_p and finalize_c must be powers of two (Triton block shapes),
    programs_per_sm and stages >= 1, pass2_per_sm >= 0, acc2d, fuse_finalize, reverse and
    launch_cache 0 or 1."""
    tuning = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, _, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if key not in GPU_TUNING or not value.strip().isdigit():
            raise ValueError(f"FASTRES_BN_TUNING: expected knob=integer with knobs "
                             f"{', '.join(GPU_TUNING)}, got {item!r}")
        n = int(value)
        if key in SWITCHES and n not in (0, 1):
            raise ValueError(f"FASTRES_BN_TUNING: {key} must be 0 or 1, got {n}")
        if key not in (*SWITCHES, "pass2_per_sm") and n < 1:   # pass2_per_sm may be 0 (digits: never < 0)
            raise ValueError(f"FASTRES_BN_TUNING: {key} must be >= 1, got {n}")
        if key in ("tile", "warps", "block_p", "finalize_c") and n & (n - 1):
            raise ValueError(f"FASTRES_BN_TUNING: {key} must be a power of two, got {n}")
        tuning[key] = n
    return tuning


GPU_TUNING.update(parse_tuning(os.environ.get("FASTRES_BN_TUNING", "")))


def _cdiv(a: int, b: int) -> int:
    """Ceiling division of ints (triton.cdiv is a constexpr function: ~5 us a call on the host)."""
    return -(-a // b)


@functools.lru_cache(maxsize=1024)
def _geometry(M: int, C: int, R: int, G: int, on_gpu: bool, sms: int, tuning: tuple):
    """Blocks and the slab splits for a [M, C] problem with G groups of R rows: (S, SLAB) for
    the reductions, (S2, SLAB2) for the second pass (apply, dx).

    GPU: BLOCK_C up to 128 (a row segment of >= 128 bytes in fp16 from C = 64), tiles of
    `tile` elements, about `programs_per_sm` programs per SM so each streams a long slab, and
    `pass2_per_sm` (if not 0) for the second pass.
    Interpreter: programs run one after another and cost per instance, so few programs and small
    tiles (which still exercise the multi-tile loops, ragged tails and chunked finalize); its
    "SM count" is 1, so pass2_per_sm, when set, is the second pass's program count.
    TUNING: the knobs as given (the launch cache's keys take them from here)."""
    knobs = dict(tuning)
    if on_gpu:
        block_c = min(128, max(16, triton.next_power_of_2(C)))
        block_m = max(1, knobs["tile"] // block_c)
        target, block_p, warps = knobs["programs_per_sm"] * sms, knobs["block_p"], knobs["warps"]
    else:
        block_c = min(64, max(16, triton.next_power_of_2(C)))
        block_m, target, block_p, warps = 32, 8, 4, 4
    c_blocks = _cdiv(C, block_c)

    def split(programs: int) -> tuple[int, int]:
        """(slabs per group, rows per slab, a multiple of BLOCK_M) for about `programs` programs."""
        slabs = max(1, min(_cdiv(programs, G * c_blocks), _cdiv(R, block_m)))
        slab = _cdiv(_cdiv(R, slabs), block_m) * block_m
        return _cdiv(R, slab), slab

    (slabs, slab), pass2 = split(target), knobs.get("pass2_per_sm", 0)
    slabs2, slab2 = split(pass2 * sms) if pass2 else (slabs, slab)
    return dict(BLOCK_M=block_m, BLOCK_C=block_c, S=slabs, SLAB=slab, S2=slabs2, SLAB2=slab2,
                c_blocks=c_blocks, BLOCK_P=block_p, BLOCK_CF=min(knobs.get("finalize_c", 32), block_c),
                num_warps=warps,
                TWO_D=bool(knobs.get("acc2d", 0)), STAGES=knobs.get("stages", 1),
                FUSE_FIN=bool(knobs.get("fuse_finalize", 0)), REVERSE=bool(knobs.get("reverse", 0)),
                LAUNCH_CACHE=bool(knobs.get("launch_cache", 0)), TUNING=tuning)


def _groups(x: Tensor, ghost_batch: int) -> tuple[int, int]:
    """(G, images per group): ghost batch norm splits the batch into groups of ghost_batch."""
    n = x.shape[0]
    per = ghost_batch if 0 < ghost_batch < n else n
    return -(-n // per), per


def _channels_last(t: Tensor) -> Tensor:
    """t as a channels-last [N, C, H, W] tensor, whose memory is the row-major matrix
    [N*H*W, C] the kernels index (they take its pointer): t itself if it is one, else a
    channels-last copy (a tensor in another layout is never read with the wrong strides)."""
    return t if t.is_contiguous(memory_format=_CL) else t.contiguous(memory_format=_CL)


def _vector(t: Tensor) -> Tensor:
    """A per-channel vector (weight, bias, mean, variance) as the kernels index it, ptr + c:
    t itself if contiguous, else a contiguous copy (a strided view is never misread)."""
    return t if t.is_contiguous() else t.contiguous()


def _empty_cl(x: Tensor, dtype=None) -> Tensor:
    """The op's output layout, built identically by the real and the fake implementations."""
    return torch.empty(x.shape, dtype=dtype or x.dtype, device=x.device, memory_format=_CL)


def _check(x: Tensor, act: str, weight: Tensor, bias: Tensor, *stats: Tensor) -> None:
    """A 4-D fp16, bf16 or fp32 input with at least one image, a known activation, and [C]
    vectors: the kernels read C values of each (a shorter one would be read past its end)."""
    if x.dim() == 4 and x.shape[0] > 0 and x.dtype in DTYPES and act in K.ACT_CODES \
            and weight.shape == bias.shape == (x.shape[1],) and all(s.shape == weight.shape for s in stats):
        return                  # the common case without torch._check's calls (host time per layer)
    torch._check(x.dim() == 4, lambda: f"expected a 4-D [N, C, H, W] input, got {x.dim()}-D")
    # The kernels compute in fp32 and store in x's dtype: an fp64 input would lose precision silently
    # (BatchNormAct2d runs it through its fp64 reference path), an integer one would be truncated.
    torch._check(x.dtype in DTYPES, lambda: f"expected a float16, bfloat16 or float32 input, got {x.dtype}")
    torch._check(x.shape[0] > 0, lambda: "expected at least one image (N >= 1), got an empty batch")
    torch._check(act in K.ACT_CODES, lambda: f"unknown activation {act!r}")
    for name, t in (("weight", weight), ("bias", bias), *zip(("running_mean", "running_var"), stats)):
        torch._check(t.shape == (x.shape[1],), lambda: f"{name} must have shape [C] = [{x.shape[1]}], "
                                                       f"got {list(t.shape)}")


def _target(x: Tensor) -> tuple[bool, int]:
    """(whether x's kernels run on a GPU, its SM count): the device facts the launch geometry
    needs (bench/compile_check.py substitutes a GPU's to find the launches without one)."""
    return (True, _sm_count(x.device.index or 0)) if x.is_cuda else (False, 1)


def _launch(x: Tensor, G: int, per: int):
    # int(): the launch geometry needs concrete sizes. Where torch.compile traces a triton_op
    # twin with a symbolic size (automatic dynamic shapes), this specialises the graph on it.
    n, c, h, w = (int(d) for d in x.shape)
    M, R = n * h * w, per * h * w
    geo = _geometry(M, c, R, G, *_target(x), tuple(GPU_TUNING.items()))
    return M, R, geo


def _direct(kernel):
    """How the custom ops launch a kernel: as is (the triton_op variants wrap it, see below)."""
    return kernel


class _LaunchCache:
    """`wrap` for one custom-op call with the launch_cache knob. The first call with a key
    launches through kernel[grid](...) (Triton binds and specialises every argument, compiling
    where needed) and records each compiled kernel's own launcher; once that call has made all
    its launches (publish), later calls with the key launch straight through the recorded
    launchers, in the same order. The key (_cached's) holds everything the op's launch sequence,
    grids, constexprs and Triton's specialisation of its arguments follow from: shapes, groups,
    dtypes, activation, the knobs, the fused finalize's use, the current device, and the 16-byte
    alignment of every pointer the caller passes (the op's own allocations are aligned). Under
    the interpreter kernel[grid] returns no compiled kernel: nothing is published."""

    def __init__(self, key: tuple):
        self.key, self.index = key, 0
        self.runners = _LAUNCHES.get(key)
        self.recorded = [] if self.runners is None else None

    def __call__(self, kernel):
        self.kernel = kernel
        return self

    def __getitem__(self, grid):
        self.grid = grid
        return self._launch

    def _launch(self, *args, **kwargs):
        i, self.index = self.index, self.index + 1
        if self.runners is not None:
            if i < len(self.runners) and self.runners[i][0] is self.kernel:
                _, run, constexprs = self.runners[i]
                return run(*args, *(kwargs[name] for name in constexprs))
            # Not the recorded kernel object (one replaced by a stand-in, as the benchmarks and
            # tests do): the rest of this call launches through kernel[grid] and records nothing.
            self.runners = None
        compiled = self.kernel[self.grid](*args, **kwargs)
        if self.recorded is None or not isinstance(self.kernel, triton.runtime.JITFunction):
            self.recorded = None        # a stand-in for a kernel (a benchmark's recorder): no record
        elif hasattr(compiled, "run"):  # a compiled kernel (the interpreter returns none)
            # The launcher takes every kernel parameter positionally: the constexprs after args.
            self.recorded.append((self.kernel, compiled_launcher(compiled, self.grid),
                                  self.kernel.arg_names[len(args):]))
        return compiled

    def publish(self):
        """After the op's last launch: a first call's complete record serves the key from now on."""
        if self.recorded is not None and len(self.recorded) == self.index:
            _LAUNCHES.setdefault(self.key, self.recorded)


_LAUNCHES: dict = {}


def compiled_launcher(compiled, grid: tuple):
    """compiled[grid] for a grid of 1-3 dimensions: the launcher of Triton's compiled kernel
    (what kernel[grid](...) returns on a GPU) reads all three, where kernel[grid] pads a
    shorter grid with ones itself."""
    return compiled[(*grid, 1, 1)[:3]]


def _caching(wrap, geo: dict) -> bool:
    """Whether this call launches through a _LaunchCache: the knob is on and the custom ops
    launch (the triton_op twins' kernels are launched by Inductor). Asked before the key is
    built, which the default (off) never does."""
    return wrap is _direct and geo["LAUNCH_CACHE"]


def _cached(key: tuple, *pointers: Tensor) -> _LaunchCache:
    """The _LaunchCache of a call with this key and these caller pointers (the first: x)."""
    x = pointers[0]
    current = torch.cuda.current_device() if x.is_cuda else None    # Triton's kernel cache is per device
    return _LaunchCache((*key, x.device, current, tuple(t.data_ptr() % 16 == 0 for t in pointers)))


def _publish(wrap) -> None:
    if isinstance(wrap, _LaunchCache):
        wrap.publish()


# Launch options of the custom ops' launches: floating-point contraction (FMA) asked for, not
# left to Triton's default, which triton 3.9 warns will turn it off in 3.10. The kernels' math,
# its instruction counts (bench/compile_check.py) and its tested accuracy assume FMAs. Inductor
# launches the triton_op twins' kernels with its own options (it refuses unknown launch kwargs).
_DIRECT_OPTIONS = {"enable_fp_fusion": True}


def _options(wrap) -> dict:
    return _DIRECT_OPTIONS if wrap is _direct else {}


def _fused_tiles(counters, geo: dict, writes=None) -> dict:
    """A reduction kernel's fused-finalize constants (its tail's tile and `writes` flags); without
    a fused finalize, tiles of 1 and no writes (unused), so that the finalize knobs do not compile
    the plain reductions anew."""
    writes = writes or {}
    if counters is None:
        return dict(FUSE_FIN=False, BLOCK_P=1, BLOCK_CF=1, **{k: False for k in writes})
    return dict(FUSE_FIN=True, BLOCK_P=geo["BLOCK_P"], BLOCK_CF=geo["BLOCK_CF"], **writes)


def _scratch(x: Tensor, *shape: int) -> Tensor:
    """An fp32 work buffer on x's device, uninitialised (the tests fill it with NaN instead)."""
    return x.new_empty(shape, dtype=torch.float32)


# The fused finalize's counters: one zeroed int32 buffer per device, which every launch leaves at
# zero. COUNTERS bounds the (group, channel block) pairs of one launch (ghost BN of 2000 images
# in groups of 32 at C = 512 needs 63 x 4). One buffer per device assumes that launches on it do
# not overlap: true of fastres (one stream; CUDA graphs replay in order), not of two streams
# running fused-finalize BN layers at once, which would share the counters. The knob is off by
# default; keying the buffer by stream instead would miss it inside a CUDA-graph capture (a stream
# of its own), where the benchmark times the knob.
COUNTERS = 4096
_COUNTERS: dict = {}


def _fused_finalize(x: Tensor, G: int, geo: dict, wrap):
    """The counters for a fused finalize of this launch, or None where the finalize kernels run:
    the knob off; a triton_op twin (Inductor traces its kernels' arguments, and the counters
    are state outside the op); more pairs than COUNTERS; or a CUDA graph being captured before
    the buffer exists (its allocation and zeroing would belong to the graph)."""
    if not geo["FUSE_FIN"] or wrap is not _direct or G * geo["c_blocks"] > COUNTERS:
        return None
    counters = _COUNTERS.get(x.device)
    if counters is None:
        if x.is_cuda and torch.cuda.is_current_stream_capturing():
            return None
        counters = _COUNTERS[x.device] = torch.zeros(COUNTERS, dtype=torch.int32, device=x.device)
    return counters


# ---------------------------------------------------------------- forward, training
def _train(x: Tensor, weight: Tensor, bias: Tensor, eps: float, act: str, alpha: float,
           ghost_batch: int, wrap) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    _check(x, act, weight, bias)
    weight, bias = _vector(weight), _vector(bias)
    G, per = map(int, _groups(x, ghost_batch))          # concrete, as in _launch
    M, R, geo = _launch(x, G, per)
    C, S = x.shape[1], geo["S"]
    xr, y = _channels_last(x), _empty_cl(x)
    mean, rstd, var = (x.new_empty((G, C), dtype=torch.float32) for _ in range(3))
    pmean, pm2 = (_scratch(x, G * S, C) for _ in range(2))
    grid, options = (G * S, geo["c_blocks"]), _options(wrap)
    blocks = dict(BLOCK_M=geo["BLOCK_M"], BLOCK_C=geo["BLOCK_C"], STAGES=geo["STAGES"],
                  num_warps=geo["num_warps"], **options)
    counters = _fused_finalize(x, G, geo, wrap)
    if _caching(wrap, geo):
        wrap = _cached(("train", x.shape, x.dtype, weight.dtype, bias.dtype, act, G, per, geo["TUNING"],
                        counters is None), xr, weight, bias)
    # Without a fused finalize an input, which the kernel does not touch, stands in for the counters.
    wrap(K.bn_stats_kernel)[grid](xr, pmean, pm2, mean, rstd, var, xr if counters is None else counters,
                                  M, C, R, S, geo["SLAB"], eps, TWO_D=geo["TWO_D"],
                                  **_fused_tiles(counters, geo), **blocks)
    if counters is None:
        wrap(K.bn_finalize_kernel)[(G, _cdiv(C, geo["BLOCK_CF"]))](
            pmean, pm2, mean, rstd, var, M, C, R, S, geo["SLAB"], eps,
            BLOCK_P=geo["BLOCK_P"], BLOCK_C=geo["BLOCK_CF"], **options)
    wrap(K.bn_apply_kernel)[(G * geo["S2"], geo["c_blocks"])](
        xr, y, mean, rstd, weight, bias, M, C, R, geo["S2"], geo["SLAB2"], eps, alpha,
        ACT=K.ACT_CODES[act], FROM_VAR=False, REVERSE=geo["REVERSE"], **blocks)
    _publish(wrap)
    return y, mean, rstd, var


def _train_impl(x: Tensor, weight: Tensor, bias: Tensor, eps: float, act: str, alpha: float,
                ghost_batch: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    # float(): an int alpha (or eps) would be typed, and an int 1 specialised, apart by Triton, which
    # the launch cache's key does not tell apart (eager calls pass the module's values as given).
    return _train(x, weight, bias, float(eps), act, float(alpha), ghost_batch, _direct)


bn_act_train = torch.library.custom_op("fastres::bn_act_train", _train_impl, mutates_args=())


@bn_act_train.register_fake
def _(x, weight, bias, eps, act, alpha, ghost_batch):
    G, _ = _groups(x, ghost_batch)
    stat = lambda: x.new_empty((G, x.shape[1]), dtype=torch.float32)  # noqa: E731
    return _empty_cl(x), stat(), stat(), stat()


# ---------------------------------------------------------------- forward, running statistics
def _eval(x: Tensor, weight: Tensor, bias: Tensor, running_mean: Tensor, running_var: Tensor,
          eps: float, act: str, alpha: float, wrap) -> Tensor:
    _check(x, act, weight, bias, running_mean, running_var)
    weight, bias, running_mean, running_var = map(_vector, (weight, bias, running_mean, running_var))
    M, R, geo = _launch(x, 1, int(x.shape[0]))
    xr, y, options = _channels_last(x), _empty_cl(x), _options(wrap)
    if _caching(wrap, geo):
        wrap = _cached(("eval", x.shape, x.dtype, weight.dtype, bias.dtype, running_mean.dtype, running_var.dtype,
                        act, geo["TUNING"]), xr, weight, bias, running_mean, running_var)
    wrap(K.bn_apply_kernel)[(geo["S2"], geo["c_blocks"])](
        xr, y, running_mean, running_var, weight, bias, M, x.shape[1],
        R, geo["S2"], geo["SLAB2"], eps, alpha, ACT=K.ACT_CODES[act], FROM_VAR=True,
        BLOCK_M=geo["BLOCK_M"], BLOCK_C=geo["BLOCK_C"], STAGES=geo["STAGES"], num_warps=geo["num_warps"],
        REVERSE=False, **options)      # one pass over x: no first pass to follow
    _publish(wrap)
    return y


def _eval_impl(x: Tensor, weight: Tensor, bias: Tensor, running_mean: Tensor, running_var: Tensor,
               eps: float, act: str, alpha: float) -> Tensor:
    return _eval(x, weight, bias, running_mean, running_var, float(eps), act, float(alpha), _direct)


bn_act_eval = torch.library.custom_op("fastres::bn_act_eval", _eval_impl, mutates_args=())


@bn_act_eval.register_fake
def _(x, weight, bias, running_mean, running_var, eps, act, alpha):
    return _empty_cl(x)


# ---------------------------------------------------------------- backward
def _sum_groups(per_group: Tensor, out: Tensor) -> None:
    if out.dtype == torch.float32:
        torch.sum(per_group, 0, out=out)
    else:
        out.copy_(per_group.sum(0))


def _backward_run(dy: Tensor, x: Tensor, weight: Tensor, bias: Tensor, mean: Tensor, rstd: Tensor,
                  eps: float, act: str, alpha: float, ghost_batch: int, batch_stats: bool,
                  weight_grad: bool, wrap) -> tuple[Tensor, Tensor, Tensor]:
    """batch_stats=False: mean/rstd are the running mean/variance (eval mode; the variance is
    turned into rstd in-kernel). weight_grad=False (frozen scale): dweight is empty."""
    weight, bias, mean, rstd = map(_vector, (weight, bias, mean, rstd))
    G, per = map(int, _groups(x, ghost_batch) if batch_stats else (1, x.shape[0]))
    M, R, geo = _launch(x, G, per)
    C, S = x.shape[1], geo["S"]
    xr, dyr, dx = _channels_last(x), _channels_last(dy), _empty_cl(x)
    psum_g, psum_gx = (_scratch(x, G * S, C) for _ in range(2))
    sum_g, sum_gx = (_scratch(x, G, C) for _ in range(2))
    dw = torch.empty(C if weight_grad else 0, dtype=weight.dtype, device=x.device)
    db = torch.empty(C, dtype=bias.dtype, device=x.device)
    grid, options = (G * S, geo["c_blocks"]), _options(wrap)
    act_code = K.ACT_CODES[act]
    blocks = dict(BLOCK_M=geo["BLOCK_M"], BLOCK_C=geo["BLOCK_C"], STAGES=geo["STAGES"],
                  num_warps=geo["num_warps"], **options)
    counters = _fused_finalize(x, G, geo, wrap)
    if _caching(wrap, geo):
        wrap = _cached(("backward", x.shape, x.dtype, dyr.dtype, weight.dtype, bias.dtype, mean.dtype, rstd.dtype,
                        act, G, per, batch_stats, weight_grad, geo["TUNING"], counters is None),
                       xr, dyr, weight, bias, mean, rstd)
    # Where dgamma (frozen scale), the totals (ghost groups) or the counters (no fused finalize)
    # are not written, an input the kernels only read stands in for their pointers: never an
    # empty tensor's null pointer, which Triton's launcher refuses, and never an output (two
    # names for one written tensor).
    totals = dict(WRITE_TOTALS=G == 1, WRITE_DW=weight_grad)
    dw_or, db_or = dw if weight_grad else weight, db if G == 1 else weight
    wrap(K.bn_bwd_reduce_kernel)[grid](xr, dyr, mean, rstd, weight, bias, psum_g, psum_gx, sum_g, sum_gx,
                                       dw_or, db_or, weight if counters is None else counters, M, C, R,
                                       S, geo["SLAB"], eps, alpha, ACT=act_code, FROM_VAR=not batch_stats,
                                       TWO_D=geo["TWO_D"], **_fused_tiles(counters, geo, totals), **blocks)
    if counters is None:
        wrap(K.bn_bwd_finalize_kernel)[(G, _cdiv(C, geo["BLOCK_CF"]))](
            psum_g, psum_gx, sum_g, sum_gx, dw_or, db_or, C, S, BLOCK_P=geo["BLOCK_P"],
            BLOCK_C=geo["BLOCK_CF"], **totals, **options)
    if G > 1:   # ghost groups: dbeta, dgamma are sums over groups (torch's sum is deterministic)
        _sum_groups(sum_g, db)
        if weight_grad:
            _sum_groups(sum_gx, dw)
    wrap(K.bn_bwd_dx_kernel)[(G * geo["S2"], geo["c_blocks"])](
        xr, dyr, dx, mean, rstd, weight, bias, sum_g, sum_gx, M, C, R, geo["S2"], geo["SLAB2"], eps,
        alpha, ACT=act_code, BATCH_STATS=batch_stats, FROM_VAR=not batch_stats, REVERSE=geo["REVERSE"],
        **blocks)
    _publish(wrap)
    return dx, dw, db


def _backward_impl(dy: Tensor, x: Tensor, weight: Tensor, bias: Tensor, mean: Tensor, rstd: Tensor,
                   eps: float, act: str, alpha: float, ghost_batch: int, batch_stats: bool,
                   weight_grad: bool) -> tuple[Tensor, Tensor, Tensor]:
    return _backward_run(dy, x, weight, bias, mean, rstd, float(eps), act, float(alpha), ghost_batch, batch_stats,
                         weight_grad, _direct)


bn_act_backward = torch.library.custom_op("fastres::bn_act_backward", _backward_impl, mutates_args=())


@bn_act_backward.register_fake
def _(dy, x, weight, bias, mean, rstd, eps, act, alpha, ghost_batch, batch_stats, weight_grad):
    c = x.shape[1]
    return (_empty_cl(x), weight.new_empty((c if weight_grad else 0,)), bias.new_empty((c,)))


def _backward(ctx, dy, batch_stats: bool, backward=None):
    if dy is None:                        # y unused (only the statistics were): no gradient
        return None, None, None
    x, weight, bias, mean, rstd = ctx.saved_tensors
    need_x, need_w, need_b = ctx.needs_input_grad[:3]
    dx, dw, db = (backward or bn_act_backward)(dy, x, weight, bias, mean, rstd, ctx.eps, ctx.act,
                                               ctx.alpha, ctx.ghost_batch, batch_stats, need_w)
    return dx if need_x else None, dw if need_w else None, db if need_b else None


def _setup_train(ctx, inputs, output):
    x, weight, bias, ctx.eps, ctx.act, ctx.alpha, ctx.ghost_batch = inputs
    _, mean, rstd, var = output
    ctx.mark_non_differentiable(mean, rstd, var)
    ctx.set_materialize_grads(False)      # no zero-filled grads for the statistics outputs
    ctx.save_for_backward(x, weight, bias, mean, rstd)


def _backward_train(ctx, dy, _dmean, _drstd, _dvar):
    return *_backward(ctx, dy, True), None, None, None, None


def _setup_eval(ctx, inputs, output):
    x, weight, bias, running_mean, running_var, ctx.eps, ctx.act, ctx.alpha = inputs
    ctx.ghost_batch = 0
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(x, weight, bias, running_mean, running_var)


def _backward_eval(ctx, dy):
    return *_backward(ctx, dy, False), None, None, None, None, None


bn_act_train.register_autograd(_backward_train, setup_context=_setup_train)
bn_act_eval.register_autograd(_backward_eval, setup_context=_setup_eval)


# ---------------------------------------------------------------- triton_op variants (torch >= 2.6)
# The same three ops registered with torch.library.triton_op: torch.compile then sees their
# Triton kernels (wrap_triton) and Inductor launches them from its generated code, so a compiled
# step pays no custom-op dispatch and runs no Python of ours per call (shapes, launch geometry and
# allocations are traced once). The first H100 run measured the custom ops' host cost at 770 us
# per layer compiled (PyTorch's BN: 108 us). BatchNormAct2d uses them under torch.compile when
# FASTRES_BN_OP=triton_op (default custom_op, until a GPU run measures the difference). Inductor
# cannot trace the interpreter's kernels, so on a CPU they run eagerly only (tests/test_bn_act.py).
BN_OPS = ("custom_op", "triton_op")
BN_OP = os.environ.get("FASTRES_BN_OP", "custom_op")
if BN_OP not in BN_OPS:
    raise ValueError(f"FASTRES_BN_OP must be one of {', '.join(BN_OPS)}, got {BN_OP!r}")
HAS_TRITON_OP = hasattr(torch.library, "triton_op")
if BN_OP == "triton_op" and not HAS_TRITON_OP:
    raise ValueError(f"FASTRES_BN_OP=triton_op needs torch >= 2.6 (torch.library.triton_op); "
                     f"this is torch {torch.__version__}")

if HAS_TRITON_OP:
    from torch.library import triton_op, wrap_triton

    def _train_t(x: Tensor, weight: Tensor, bias: Tensor, eps: float, act: str, alpha: float,
                 ghost_batch: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return _train(x, weight, bias, eps, act, alpha, ghost_batch, wrap_triton)

    def _eval_t(x: Tensor, weight: Tensor, bias: Tensor, running_mean: Tensor, running_var: Tensor,
                eps: float, act: str, alpha: float) -> Tensor:
        return _eval(x, weight, bias, running_mean, running_var, eps, act, alpha, wrap_triton)

    def _backward_t(dy: Tensor, x: Tensor, weight: Tensor, bias: Tensor, mean: Tensor, rstd: Tensor,
                    eps: float, act: str, alpha: float, ghost_batch: int, batch_stats: bool,
                    weight_grad: bool) -> tuple[Tensor, Tensor, Tensor]:
        return _backward_run(dy, x, weight, bias, mean, rstd, eps, act, alpha, ghost_batch,
                             batch_stats, weight_grad, wrap_triton)

    bn_act_train_t = triton_op("fastres::bn_act_train_t", _train_t, mutates_args=())
    bn_act_eval_t = triton_op("fastres::bn_act_eval_t", _eval_t, mutates_args=())
    bn_act_backward_t = triton_op("fastres::bn_act_backward_t", _backward_t, mutates_args=())
    bn_act_train_t.register_autograd(
        lambda ctx, dy, *_: (*_backward(ctx, dy, True, bn_act_backward_t), None, None, None, None),
        setup_context=_setup_train)
    bn_act_eval_t.register_autograd(
        lambda ctx, dy: (*_backward(ctx, dy, False, bn_act_backward_t), None, None, None, None, None),
        setup_context=_setup_eval)


def _compiled_ops():
    """(train, eval) ops for torch.compile to trace, as FASTRES_BN_OP (BN_OP) chooses."""
    return (bn_act_train_t, bn_act_eval_t) if BN_OP == "triton_op" else (bn_act_train, bn_act_eval)


# ---------------------------------------------------------------- eager entry points
class _EagerTrain(torch.autograd.Function):
    """bn_act_train's kernels and backward formula without torch.library's dispatch layers,
    for eager mode where nothing traces the op (bench/host_overhead.py measures the saving)."""

    @staticmethod
    def forward(ctx, x, weight, bias, eps, act, alpha, ghost_batch):
        output = _train_impl(x, weight, bias, eps, act, alpha, ghost_batch)
        _setup_train(ctx, (x, weight, bias, eps, act, alpha, ghost_batch), output)
        return output

    @staticmethod
    def backward(ctx, dy, _dmean, _drstd, _dvar):
        # With create_graph=True (grad mode on here) the op, which has no autograd formula: its
        # outputs then depend on x, weight, bias for autograd, and differentiating them raises
        # (as under torch.compile) instead of treating dx, dweight as constants (a gradient
        # penalty silently missing its second-order terms).
        backward = bn_act_backward if torch.is_grad_enabled() else _backward_impl
        return *_backward(ctx, dy, True, backward), None, None, None, None


def fused_train(x: Tensor, weight: Tensor, bias: Tensor, eps: float, act: str, alpha: float,
                ghost_batch: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """bn_act_train: the custom op while torch.compile traces, a direct call in eager mode."""
    if torch.compiler.is_compiling():
        return _compiled_ops()[0](x, weight, bias, eps, act, alpha, ghost_batch)
    return _EagerTrain.apply(x, weight, bias, eps, act, alpha, ghost_batch)


def fused_eval(x: Tensor, weight: Tensor, bias: Tensor, running_mean: Tensor, running_var: Tensor,
               eps: float, act: str, alpha: float) -> Tensor:
    """bn_act_eval: a direct call when nothing needs its gradient (eager inference), else the op."""
    if torch.compiler.is_compiling():
        return _compiled_ops()[1](x, weight, bias, running_mean, running_var, eps, act, alpha)
    if torch.is_grad_enabled() and any(t.requires_grad for t in (x, weight, bias)):
        return bn_act_eval(x, weight, bias, running_mean, running_var, eps, act, alpha)
    return _eval_impl(x, weight, bias, running_mean, running_var, eps, act, alpha)
