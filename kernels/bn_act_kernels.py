"""Triton kernels for training-mode BatchNorm2d fused with an activation.

Not run directly: bn_act_op.py launches these; tests/test_bn_act.py checks them
(`OMP_NUM_THREADS=1 pytest tests/test_bn_act.py`, CPU via TRITON_INTERPRET=1) and
bench/kernels.py times them (`python bench/kernels.py --out bench/results/bn_act.json`), and
bench/compile_check.py compiles every launch for real GPUs with Triton's compiler, without one.

Data layout: a channels-last activation [N, C, H, W] is the row-major matrix [M = N*H*W, C],
so a tile [BLOCK_M, BLOCK_C] reads BLOCK_M contiguous row segments (coalesced), unlike the
one-program-per-channel kernels of attorch/FlagGems that walk M with stride C.

Work split (how every kernel over [M, C] walks its rows): rows form G statistics groups of R rows
(ghost batch norm; G = 1, R = M otherwise; the last group may be shorter); each group is cut
into S slabs of SLAB rows; program (p, cb) with p = g*S + s walks slab s of group g in BLOCK_M
steps for channel block cb. Reductions write one fp32 partial per program into [G*S, C]
buffers that a finalize kernel combines in a fixed order: no atomics on the data, so results
are bit-identical from call to call. Apply and dx, which write no partials, may be launched
with another S and SLAB (more, shorter slabs: bn_act_op's pass2_per_sm); each element's result
does not depend on which program computes it.

Fused finalize (FUSE_FIN): the reduction kernel's last program of each group and channel block,
found with one atomic counter per (group, channel block), combines the partials itself, tile
by tile as the finalize kernel's programs would (the same code and order, so still
deterministic; the same bits in the interpreter, while a GPU compiler may lay out a tile's sum
differently inside another kernel), and the finalize kernel is not launched: two kernels per
layer instead of three, forward and backward, for a serial tail of BLOCK_C / BLOCK_CF finalize
tiles in that last program. The counters live in a zeroed buffer that the last program puts
back to 0.

Memory-level parallelism (STAGES): a slab's row loop is `tl.range(..., num_stages=STAGES)`. Triton
software-pipelines a loop with no tl.dot only when the loop itself asks for stages: a plain
`range` (or STAGES=1, which compiles to the same code) issues a tile's loads and waits for them
before the next tile's, so each program has one tile in flight. With STAGES >= 2 the loads of the
next STAGES - 1 tiles are in flight (cp.async into shared memory, one tile of it per input and
stage after the first) while one is processed. Checked on sm_90 code from Triton 3.6
(bench/compile_check.py counts the asynchronous copies of every launch): STAGES=1 has none.

L2 reuse (REVERSE): each pass reads its data twice, the reduction then apply (forward) or dx
(backward). A GPU starts programs in grid order, so a second pass in the same order first reads
what the first pass read first: the lines longest in the L2 cache, the first evicted once the
data (the backward's x and dy) outgrow it, and then it evicts each line just before it needs
it. With REVERSE the apply and dx kernels' program (p, cb) takes the place of (P-1-p, CB-1-cb):
they start with the last-read, still-cached rows, and their own traffic evicts the rows they
read last. For an LRU cache of L bytes and x, dy of B bytes each, dx then finds up to L / (3B)
of its reads cached, against none in grid order once 2B > L (an H100's L2 is 50 MB; cifar10-94's
largest BN layers are 24-28 MB, the speedrun's 37-42 MB; bench/l2_model.py simulates it). Off
by default: on an H200 it gained 0.2% (2026-12-04), where apply and dx already stream at
72-101% of copy bandwidth.

Instruction budget: a kernel moving B bytes per element keeps up with HBM only while it issues
fewer than about 10 x B machine instructions per element (an H100 issues ~3e13
thread-instructions/s against ~3e12 bytes/s of copy bandwidth): ~20 for the statistics, 40
for apply and the backward sums, 60 for dx. bench/compile_check.py counts each row loop's SASS
instructions per element. The activations therefore avoid fp32 division (~8 instructions of
range fix-ups around one reciprocal) and tl.erf (CUDA's erff: two polynomials, selected per
element): see _normal_cdf, _sigmoid and _exp_over; the statistics kernel's per-tile weights
are scalars. The per-tile reductions of the statistics and backward-sum kernels cost more
than their arithmetic (18 instructions per element for the statistics at a 16 x 128 tile
reduced per tile, 7.5-8 with TWO_D, the default; sm_90, triton 3.6).

No block pointers (removed in triton 3.9), no libdevice (fails in the interpreter), and
tl.exp only on fp32 (the interpreter rejects fp16).
"""
import triton
import triton.language as tl

# Activation codes, passed as the ACT constexpr. Globals read inside @triton.jit code must be
# tl.constexpr objects (plain ints pass the interpreter but fail the GPU compiler).
ACT_CODES = {"identity": 0, "relu": 1, "celu": 2, "gelu": 3, "silu": 4}
IDENTITY, RELU, CELU, GELU, SILU = (tl.constexpr(v) for v in ACT_CODES.values())
LOG2E = tl.constexpr(1.4426950408889634)
SQRT_HALF = tl.constexpr(0.7071067811865476)


# ---------------------------------------------------------------- activation math (fp32)
@triton.jit
def _normal_cdf(z):
    """(Phi(z), -z^2/2 * log2(e)) with Phi(z) = erfc(-z / sqrt(2)) / 2, the standard normal CDF.

    erfc from Numerical Recipes (Press et al., Numerical Recipes in C, 2nd ed., 6.2, erfcc):
    erfc(a) = t exp(-a^2 + P(t)), t = 1 / (1 + a/2), a >= 0, fractional error < 1.2e-7 for
    every a. In fp32 |Phi - exact| <= 2.1e-7 (interpreter; the tests allow 5e-7 for a GPU's
    approximate rsqrt and exp2), and the negative tail keeps its relative accuracy, which
    0.5 * (1 + erf) loses to cancellation (tests/test_bn_act.py measures both against float64).
    tl.erf compiles to CUDA's erff, two polynomials selected per element; this is one
    polynomial, and its division and exp are the cheap forms: 1/d = rsqrt(d^2) (one MUFU; fp32
    division is ~8 instructions of range fix-ups) and exp2 with log2(e) and the 1/2 of
    Phi = erfc/2 folded into P's coefficients. The second value serves the backward's
    exp(-z^2/2) = exp2 of it (bench/compile_check.py counts the instructions)."""
    a = tl.abs(z)
    d = 1.0 + a * (0.5 * SQRT_HALF)                  # 1 + erfc's argument / 2
    t = tl.rsqrt(d * d)
    p = (0.17087277 * LOG2E) * t - 0.82215223 * LOG2E
    p = p * t + 1.48851587 * LOG2E
    p = p * t - 1.13520398 * LOG2E
    p = p * t + 0.27886807 * LOG2E
    p = p * t - 0.18628806 * LOG2E
    p = p * t + 0.09678418 * LOG2E
    p = p * t + 0.37409196 * LOG2E
    p = p * t + 1.00002368 * LOG2E
    p = p * t - (1.26551223 * LOG2E + 1.0)          # + 1.0: the 1/2 of erfc/2
    nb2 = (z * z) * (-0.5 * LOG2E)                    # -z^2/2 * log2(e)
    half_erfc = t * tl.exp2(p + nb2)                  # Phi(-|z|)
    return tl.where(z > 0, 1.0 - half_erfc, half_erfc), nb2


@triton.jit
def _exp_over(z, alpha):
    """exp(min(z, 0) / alpha) (CELU) as exp2 of a product: the scalar log2(e) / alpha is one
    division per program, where z / alpha is ~8 instructions per element."""
    return tl.exp2(tl.minimum(z, 0.0) * (LOG2E / alpha))


@triton.jit
def _sigmoid(z):
    """1 / (1 + exp(-z)) with the reciprocal as rsqrt(d)^2 (one MUFU; fp32 division is ~8
    instructions), which holds for every finite d (d^2 would overflow from z = -44)."""
    r = tl.rsqrt(1.0 + tl.exp2(z * -LOG2E))
    return r * r


@triton.jit
def _act_fwd(z, alpha, ACT: tl.constexpr):
    if ACT == RELU:
        z = tl.maximum(z, 0.0)
    elif ACT == CELU:
        # exp of min(z, 0): the z > 0 branch is discarded, but must not overflow to inf.
        z = tl.where(z > 0, z, alpha * (_exp_over(z, alpha) - 1.0))
    elif ACT == GELU:  # exact (erf) GELU, F.gelu's default: z * Phi(z)
        cdf, _ = _normal_cdf(z)
        z = z * cdf
    elif ACT == SILU:
        z = z * _sigmoid(z)
    return z


@triton.jit
def _act_grad(z, alpha, ACT: tl.constexpr):
    """d act(z) / dz, matching PyTorch's backward formulas (relu'(0) = 0)."""
    if ACT == RELU:
        d = tl.where(z > 0, 1.0, 0.0)
    elif ACT == CELU:
        d = tl.where(z > 0, 1.0, _exp_over(z, alpha))
    elif ACT == GELU:
        cdf, nb2 = _normal_cdf(z)
        d = cdf + z * tl.exp2(nb2) * 0.3989422804014327      # Phi(z) + z phi(z)
    elif ACT == SILU:
        s = _sigmoid(z)
        d = s * (1.0 + z * (1.0 - s))
    else:
        d = tl.full(z.shape, 1.0, tl.float32)
    return d


# ---------------------------------------------------------------- shared indexing
@triton.jit
def _f32(v):
    """A float argument as fp32. Triton's launcher passes a Python float as fp32, but Inductor,
    which launches the triton_op twins under torch.compile, passes it as fp64: left so, it
    would turn the arithmetic it enters into double precision."""
    return tl.cast(v, tl.float32)


@triton.jit
def _program(REVERSE: tl.constexpr):
    """This program's (slab program p, channel block): its own ids, or with REVERSE those of the
    program at the same place from the grid's end (see "L2 reuse" above)."""
    p, cb = tl.program_id(0), tl.program_id(1)
    if REVERSE:
        p, cb = tl.num_programs(0) - 1 - p, tl.num_programs(1) - 1 - cb
    return p, cb


@triton.jit
def _slab(p, M, R, S, SLAB):
    """Group index and the [row_start, row_end) range of slab program p's slab."""
    g = p // S
    row_start = g * R + (p % S) * SLAB
    row_end = tl.minimum(tl.minimum(row_start + SLAB, g * R + R), M)
    return g, row_start, row_end


@triton.jit
def _tile(x_ptr, start, row_end, cols, C, BLOCK_M: tl.constexpr):
    """Load one [BLOCK_M, BLOCK_C] tile as fp32 (0 outside the slab); returns tile, mask, offsets."""
    rows = start + tl.arange(0, BLOCK_M)
    mask = (rows < row_end)[:, None] & (cols < C)[None, :]
    offs = rows.to(tl.int64)[:, None] * C + cols[None, :]   # int64: M*C can pass 2**31
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    return x, mask, offs


@triton.jit
def _load_stats(mean_ptr, rstd_ptr, g, cols, C, eps, FROM_VAR: tl.constexpr):
    """Per-channel mean and rstd of group g; FROM_VAR: rstd_ptr holds a variance (eval mode)."""
    cmask = cols < C
    mean = tl.load(mean_ptr + g * C + cols, mask=cmask, other=0.0).to(tl.float32)
    r = tl.load(rstd_ptr + g * C + cols, mask=cmask, other=1.0).to(tl.float32)
    if FROM_VAR:
        r = tl.rsqrt(r + eps)
    return mean, r


# ---------------------------------------------------------------- forward
@triton.jit
def bn_stats_kernel(x_ptr, pmean_ptr, pm2_ptr, mean_ptr, rstd_ptr, var_ptr, count_ptr, M, C, R, S,
                    SLAB, eps, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr, TWO_D: tl.constexpr,
                    STAGES: tl.constexpr, FUSE_FIN: tl.constexpr, BLOCK_P: tl.constexpr,
                    BLOCK_CF: tl.constexpr):
    """Per-slab mean and centred M2 per channel, robust when |mean| >> std.

    TWO_D=False: each tile is centred on its own mean before squaring and merged with Chan's
    formula (two cross-thread reductions per tile). TWO_D=True: sums of d = x - pivot and d^2
    accumulate element-wise in [BLOCK_M, BLOCK_C] registers and are reduced once at the end
    (no reduction, so no barrier, inside the loop), the pivot being the slab's first row: one
    sample of the data, within a few std of the mean, so s2 - s1^2/n cancels only a few bits."""
    eps = _f32(eps)
    g, row_start, row_end = _slab(tl.program_id(0), M, R, S, SLAB)
    cols = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    if TWO_D:
        # An empty slab (past the end of a short last group) reads row M - 1, of that same group:
        # its partial then has count 0 in the finalize, which gives it no weight.
        pivot_row = tl.minimum(row_start, M - 1).to(tl.int64)
        pivot = tl.load(x_ptr + pivot_row * C + cols, mask=cols < C, other=0.0).to(tl.float32)
        acc1 = tl.zeros([BLOCK_M, BLOCK_C], tl.float32)
        acc2 = tl.zeros([BLOCK_M, BLOCK_C], tl.float32)
        for start in tl.range(row_start, row_end, BLOCK_M, num_stages=STAGES):
            x, mask, _ = _tile(x_ptr, start, row_end, cols, C, BLOCK_M)
            d = tl.where(mask, x - pivot[None, :], 0.0)
            acc1 += d
            acc2 += d * d
        n = tl.maximum(row_end - row_start, 1).to(tl.float32)
        s1 = tl.sum(acc1, axis=0)
        mean = pivot + s1 / n
        m2 = tl.maximum(tl.sum(acc2, axis=0) - s1 * (s1 / n), 0.0)
    else:
        # Loop-carried values are [BLOCK_C] fp32 vectors, so that their type never changes across
        # iterations, under any triton version. The counts are the same for every channel: scalars
        # from the loop index, so each tile's weights are two scalar divisions per thread, not
        # three per channel (fp32 division is ~8 instructions; bench/compile_check.py counts).
        mean = tl.zeros([BLOCK_C], tl.float32)
        m2 = tl.zeros([BLOCK_C], tl.float32)
        for start in tl.range(row_start, row_end, BLOCK_M, num_stages=STAGES):
            x, mask, _ = _tile(x_ptr, start, row_end, cols, C, BLOCK_M)
            n = (start - row_start).to(tl.float32)              # rows merged so far
            nb = tl.minimum(row_end - start, BLOCK_M).to(tl.float32)
            w = nb / (n + nb)
            mean_b = tl.sum(x, axis=0) * (1.0 / nb)
            d = tl.where(mask, x - mean_b[None, :], 0.0)
            m2_b = tl.sum(d * d, axis=0)
            delta = mean_b - mean
            mean = mean + delta * w
            m2 = m2 + m2_b + delta * delta * (n * w)
    out = tl.program_id(0) * C + cols
    tl.store(pmean_ptr + out, mean, mask=cols < C)
    tl.store(pm2_ptr + out, m2, mask=cols < C)
    if FUSE_FIN:
        if _last_of_group(count_ptr, g, S):
            for i in range(0, BLOCK_C // BLOCK_CF):     # the finalize kernel's tiles, in turn
                sub = tl.program_id(1) * BLOCK_C + i * BLOCK_CF + tl.arange(0, BLOCK_CF)
                _finalize_stats(pmean_ptr, pm2_ptr, mean_ptr, rstd_ptr, var_ptr, g, sub, M, C, R, S,
                                SLAB, eps, BLOCK_P)


@triton.jit
def _last_of_group(count_ptr, g, S):
    """Whether this program is the last of the S programs of its group and channel block to get
    here (the counter, one per group and channel block, then goes back to 0 for the next launch).
    The pattern of a CUDA grid barrier's arrival: every thread's partial stores are issued before
    the barrier, one thread's atomic releases them at GPU scope, and the last arrival's atomic
    acquires all of them, so its loads (.cg: from L2, the point of coherence) see every partial."""
    lock = count_ptr + g * tl.num_programs(1) + tl.program_id(1)
    tl.debug_barrier()
    last = tl.atomic_add(lock, 1, sem="acq_rel") == S - 1
    if last:
        tl.atomic_xchg(lock, 0, sem="relaxed")
    return last


@triton.jit
def _finalize_stats(pmean_ptr, pm2_ptr, mean_ptr, rstd_ptr, var_ptr, g, cols, M, C, R, S, SLAB, eps,
                    BLOCK_P: tl.constexpr):
    """Combine group g's S slab partials (fixed order) into mean, rstd = 1/sqrt(var + eps)
    and the unbiased variance (for the running statistics), for the channels `cols`. Chunks of
    BLOCK_P partials are merged at once (n = sum n_i, M2 = sum M2_i + sum n_i (mean_i - mean)^2),
    chunks pairwise."""
    group_rows = tl.minimum(R, M - g * R)
    n = tl.zeros(cols.shape, tl.float32)
    mean = tl.zeros(cols.shape, tl.float32)
    m2 = tl.zeros(cols.shape, tl.float32)
    for s0 in range(0, S, BLOCK_P):
        s = s0 + tl.arange(0, BLOCK_P)
        # Rows in each slab (0 for slabs past the end of a short last group).
        cnt = tl.minimum(tl.maximum(group_rows - s * SLAB, 0), SLAB).to(tl.float32)
        cnt = tl.where(s < S, cnt, 0.0)
        mask = (s < S)[:, None] & (cols < C)[None, :]
        offs = (g * S + s)[:, None] * C + cols[None, :]
        pmean = tl.load(pmean_ptr + offs, mask=mask, other=0.0, cache_modifier=".cg")
        pm2 = tl.load(pm2_ptr + offs, mask=mask, other=0.0, cache_modifier=".cg")
        nb = tl.sum(cnt, axis=0)
        mean_b = tl.sum(cnt[:, None] * pmean, axis=0) / tl.maximum(nb, 1.0)
        d = pmean - mean_b[None, :]
        m2_b = tl.sum(pm2 + cnt[:, None] * d * d, axis=0)
        delta = mean_b - mean
        n_ab = n + nb
        mean = mean + delta * (nb / tl.maximum(n_ab, 1.0))
        m2 = m2 + m2_b + delta * delta * (n * nb / tl.maximum(n_ab, 1.0))
        n = n_ab
    cmask = cols < C
    tl.store(mean_ptr + g * C + cols, mean, mask=cmask)
    tl.store(rstd_ptr + g * C + cols, tl.rsqrt(m2 / n + eps), mask=cmask)
    tl.store(var_ptr + g * C + cols, m2 / tl.maximum(n - 1.0, 1.0), mask=cmask)


@triton.jit
def bn_finalize_kernel(pmean_ptr, pm2_ptr, mean_ptr, rstd_ptr, var_ptr, M, C, R, S, SLAB, eps,
                       BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    """_finalize_stats for group program_id(0), channel block program_id(1)."""
    eps = _f32(eps)
    cols = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    _finalize_stats(pmean_ptr, pm2_ptr, mean_ptr, rstd_ptr, var_ptr, tl.program_id(0), cols, M, C, R,
                    S, SLAB, eps, BLOCK_P)


@triton.jit
def bn_apply_kernel(x_ptr, y_ptr, mean_ptr, rstd_ptr, w_ptr, b_ptr, M, C, R, S, SLAB, eps, alpha,
                    ACT: tl.constexpr, FROM_VAR: tl.constexpr, BLOCK_M: tl.constexpr,
                    BLOCK_C: tl.constexpr, STAGES: tl.constexpr, REVERSE: tl.constexpr):
    """y = act(gamma * (x - mean) * rstd + beta), stored in y's dtype. Subtracting the mean
    before scaling (rather than x*scale + shift) keeps z accurate when |mean| >> std."""
    eps, alpha = _f32(eps), _f32(alpha)
    p, cb = _program(REVERSE)
    g, row_start, row_end = _slab(p, M, R, S, SLAB)
    cols = cb * BLOCK_C + tl.arange(0, BLOCK_C)
    mean, rstd = _load_stats(mean_ptr, rstd_ptr, g, cols, C, eps, FROM_VAR)
    w = tl.load(w_ptr + cols, mask=cols < C, other=0.0).to(tl.float32)
    b = tl.load(b_ptr + cols, mask=cols < C, other=0.0).to(tl.float32)
    scale = rstd * w
    for start in tl.range(row_start, row_end, BLOCK_M, num_stages=STAGES):
        x, mask, offs = _tile(x_ptr, start, row_end, cols, C, BLOCK_M)
        z = (x - mean[None, :]) * scale[None, :] + b[None, :]
        y = _act_fwd(z, alpha, ACT)
        tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=mask)


# ---------------------------------------------------------------- backward
@triton.jit
def _recompute(x_ptr, dy_ptr, start, row_end, cols, C, mean, scale, b, alpha,
               ACT: tl.constexpr, BLOCK_M: tl.constexpr):
    """x - mean (= x_hat / rstd) and g = dy * act'(z) for one tile, from the saved x, mean and
    rstd only: z = (x - mean) * scale + beta with scale = gamma * rstd, as the forward's apply.
    The callers fold rstd into their per-channel constants rather than forming x_hat, one
    multiplication per element fewer (bench/compile_check.py counts)."""
    x, mask, offs = _tile(x_ptr, start, row_end, cols, C, BLOCK_M)
    dy = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    xm = x - mean[None, :]
    if ACT == IDENTITY:
        gz = dy
    else:
        gz = dy * _act_grad(xm * scale[None, :] + b[None, :], alpha, ACT)
    return xm, gz, mask, offs


@triton.jit
def bn_bwd_reduce_kernel(x_ptr, dy_ptr, mean_ptr, rstd_ptr, w_ptr, b_ptr, psum_g_ptr, psum_gx_ptr,
                         sum_g_ptr, sum_gx_ptr, dw_ptr, db_ptr, count_ptr,
                         M, C, R, S, SLAB, eps, alpha, ACT: tl.constexpr, FROM_VAR: tl.constexpr,
                         BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr, TWO_D: tl.constexpr,
                         STAGES: tl.constexpr, FUSE_FIN: tl.constexpr, BLOCK_P: tl.constexpr,
                         BLOCK_CF: tl.constexpr, WRITE_TOTALS: tl.constexpr, WRITE_DW: tl.constexpr):
    """Per-slab partial sums of g and g * x_hat per channel: reduced tile by tile, or with
    TWO_D accumulated element-wise in [BLOCK_M, BLOCK_C] registers and reduced once. The sums
    run over g * (x - mean), times rstd once at the end."""
    eps, alpha = _f32(eps), _f32(alpha)
    g, row_start, row_end = _slab(tl.program_id(0), M, R, S, SLAB)
    cols = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    mean, rstd = _load_stats(mean_ptr, rstd_ptr, g, cols, C, eps, FROM_VAR)
    w = tl.load(w_ptr + cols, mask=cols < C, other=0.0).to(tl.float32)
    b = tl.load(b_ptr + cols, mask=cols < C, other=0.0).to(tl.float32)
    scale = w * rstd
    if TWO_D:
        acc_g = tl.zeros([BLOCK_M, BLOCK_C], tl.float32)
        acc_gx = tl.zeros([BLOCK_M, BLOCK_C], tl.float32)
        for start in tl.range(row_start, row_end, BLOCK_M, num_stages=STAGES):
            xm, gz, mask, _ = _recompute(x_ptr, dy_ptr, start, row_end, cols, C, mean, scale, b,
                                         alpha, ACT, BLOCK_M)
            gz = tl.where(mask, gz, 0.0)
            acc_g += gz
            acc_gx += gz * xm
        sum_g = tl.sum(acc_g, axis=0)
        sum_gx = tl.sum(acc_gx, axis=0) * rstd
    else:
        sum_g = tl.zeros([BLOCK_C], tl.float32)
        sum_gxm = tl.zeros([BLOCK_C], tl.float32)
        for start in tl.range(row_start, row_end, BLOCK_M, num_stages=STAGES):
            xm, gz, mask, _ = _recompute(x_ptr, dy_ptr, start, row_end, cols, C, mean, scale, b,
                                         alpha, ACT, BLOCK_M)
            gz = tl.where(mask, gz, 0.0)
            sum_g += tl.sum(gz, axis=0)
            sum_gxm += tl.sum(gz * xm, axis=0)
        sum_gx = sum_gxm * rstd
    out = tl.program_id(0) * C + cols
    tl.store(psum_g_ptr + out, sum_g, mask=cols < C)
    tl.store(psum_gx_ptr + out, sum_gx, mask=cols < C)
    if FUSE_FIN:
        if _last_of_group(count_ptr, g, S):
            for i in range(0, BLOCK_C // BLOCK_CF):
                sub = tl.program_id(1) * BLOCK_C + i * BLOCK_CF + tl.arange(0, BLOCK_CF)
                _finalize_sums(psum_g_ptr, psum_gx_ptr, sum_g_ptr, sum_gx_ptr, dw_ptr, db_ptr, g, sub, C,
                               S, WRITE_TOTALS, WRITE_DW, BLOCK_P)


@triton.jit
def _finalize_sums(psum_g_ptr, psum_gx_ptr, sum_g_ptr, sum_gx_ptr, dw_ptr, db_ptr, g, cols, C, S,
                   WRITE_TOTALS: tl.constexpr, WRITE_DW: tl.constexpr, BLOCK_P: tl.constexpr):
    """Group g's sums of g and g*x_hat (for dx) for the channels `cols`, over its slab partials
    in a fixed order. With one group these are also dbeta = sum g and dgamma = sum g*x_hat
    (skipped when the scale is frozen); with ghost groups the op adds the group sums up afterwards."""
    cmask = cols < C
    acc_g = tl.zeros(cols.shape, tl.float32)
    acc_gx = tl.zeros(cols.shape, tl.float32)
    for s0 in range(0, S, BLOCK_P):
        s = s0 + tl.arange(0, BLOCK_P)
        mask = (s < S)[:, None] & cmask[None, :]
        offs = (g * S + s)[:, None] * C + cols[None, :]
        acc_g += tl.sum(tl.load(psum_g_ptr + offs, mask=mask, other=0.0, cache_modifier=".cg"), axis=0)
        acc_gx += tl.sum(tl.load(psum_gx_ptr + offs, mask=mask, other=0.0, cache_modifier=".cg"), axis=0)
    tl.store(sum_g_ptr + g * C + cols, acc_g, mask=cmask)
    tl.store(sum_gx_ptr + g * C + cols, acc_gx, mask=cmask)
    if WRITE_TOTALS:
        tl.store(db_ptr + cols, acc_g.to(db_ptr.dtype.element_ty), mask=cmask)
        if WRITE_DW:
            tl.store(dw_ptr + cols, acc_gx.to(dw_ptr.dtype.element_ty), mask=cmask)


@triton.jit
def bn_bwd_finalize_kernel(psum_g_ptr, psum_gx_ptr, sum_g_ptr, sum_gx_ptr, dw_ptr, db_ptr, C, S,
                           WRITE_TOTALS: tl.constexpr, WRITE_DW: tl.constexpr,
                           BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    """_finalize_sums for group program_id(0), channel block program_id(1)."""
    cols = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    _finalize_sums(psum_g_ptr, psum_gx_ptr, sum_g_ptr, sum_gx_ptr, dw_ptr, db_ptr, tl.program_id(0), cols,
                   C, S, WRITE_TOTALS, WRITE_DW, BLOCK_P)


@triton.jit
def bn_bwd_dx_kernel(x_ptr, dy_ptr, dx_ptr, mean_ptr, rstd_ptr, w_ptr, b_ptr, sum_g_ptr, sum_gx_ptr,
                     M, C, R, S, SLAB, eps, alpha, ACT: tl.constexpr, BATCH_STATS: tl.constexpr,
                     FROM_VAR: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr,
                     STAGES: tl.constexpr, REVERSE: tl.constexpr):
    """dx = gamma * rstd * (g - sum(g)/n - x_hat * sum(g*x_hat)/n) with n the group's rows;
    with running statistics (eval mode) the mean and rstd are constants: dx = gamma*rstd*g."""
    eps, alpha = _f32(eps), _f32(alpha)
    p, cb = _program(REVERSE)
    g, row_start, row_end = _slab(p, M, R, S, SLAB)
    cols = cb * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = cols < C
    mean, rstd = _load_stats(mean_ptr, rstd_ptr, g, cols, C, eps, FROM_VAR)
    w = tl.load(w_ptr + cols, mask=cmask, other=0.0).to(tl.float32)
    b = tl.load(b_ptr + cols, mask=cmask, other=0.0).to(tl.float32)
    scale = w * rstd
    if BATCH_STATS:
        # dx = scale * g + shift + slope * (x - mean): the per-channel constants of the formula
        # above with x_hat = (x - mean) * rstd, two fused multiply-adds per element.
        n = tl.minimum(R, M - g * R).to(tl.float32)
        mean_g = tl.load(sum_g_ptr + g * C + cols, mask=cmask, other=0.0) / n
        mean_gx = tl.load(sum_gx_ptr + g * C + cols, mask=cmask, other=0.0) / n
        shift = -scale * mean_g
        slope = -scale * rstd * mean_gx
    for start in tl.range(row_start, row_end, BLOCK_M, num_stages=STAGES):
        xm, gz, mask, offs = _recompute(x_ptr, dy_ptr, start, row_end, cols, C, mean, scale, b,
                                        alpha, ACT, BLOCK_M)
        if BATCH_STATS:
            dx = gz * scale[None, :] + shift[None, :] + xm * slope[None, :]
        else:
            dx = gz * scale[None, :]
        tl.store(dx_ptr + offs, dx.to(dx_ptr.dtype.element_ty), mask=mask)
