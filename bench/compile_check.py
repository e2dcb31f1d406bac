"""Compile every Triton kernel launch of the fused BN-activation op for real GPUs, without one.

    python bench/compile_check.py                                  # the GPU recipes' launches, sm_90
    python bench/compile_check.py --tests --sweep --arch 80,90 --out bench/results/X-compile-check.json

The CPU tests run the kernels in Triton's interpreter, which accepts code that the GPU compiler
rejects (a loop-carried value that changes type, a plain-int global read inside a kernel, ...).
This script finds the launches the GPU path makes and compiles each distinct one with Triton's
own compiler, down to a cubin, for the given CUDA architectures; no GPU or driver is needed.

Finding the launches: bn_act_op's implementations (training forward, backward with batch or
running statistics, eval forward) run on meta tensors of every BN layer shape, with the
kernels replaced by recorders and the launch geometry set to a GPU's (an H100's 132 SMs; SMS
below). The layer shapes are the recipes' own (bench/kernels.py's recipe_layers: channels,
size, activation, ghost groups, batch), activations fp16 and BN parameters fp32 as training
uses them, with frozen and trained scales. --tests adds the shapes, dtypes and activations that
tests/test_bn_act.py launches on a GPU; --sweep adds every launch-knob set bench/kernels.py's
staged sweep (SWEEP_STAGES) can reach, on the layers of the nets gpu_check.sh sweeps.

Each launch is compiled with the argument specialisation Triton's launcher gives it (pointers
and ints divisible by 16 marked so, ints equal to 1 made constants). Reported per compiled
kernel: shared memory, checked against the architecture's limit (a launch over it fails on
the GPU), and registers and spilled bytes from the cuobjdump bundled with Triton (when present),
with the programs of this size that fit on one SM by registers.

Instructions per element (streaming kernels, from the same cuobjdump's SASS): the machine
instructions of the row loop's body (the first backward branch of the code) over the elements
one thread handles per iteration, BLOCK_M x BLOCK_C / (32 x warps). An H100 SM issues at most
4 warp instructions per cycle, so at 1.98 GHz (the first H100 run's clocks.max.sm) on 132 SMs
one instruction per element costs about 0.030 ps per element, against 0.34 ps per byte of copy
bandwidth (~2980 GB/s measured, bench/results/2026-11-28-h100-80gb-hbm3-5d9fdd7-kernels.json):
a kernel moving B bytes per element cannot stream at copy speed once it issues more than about
10 x B instructions per element (20 for the statistics, 40 for apply, 60 for dx; 11 x B at that
clock, rounded down), and in practice issue overlaps memory well only below that.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# This checkout's fastres and kernels/, never an installed copy from another checkout:
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

os.environ.pop("TRITON_INTERPRET", None)  # the GPU compiler: kernels must be JITFunctions

import torch  # noqa: E402
import triton  # noqa: E402
import triton.language as tl  # noqa: E402

from fastres.errors import Parser  # noqa: E402
from fastres.kernels import bn_act_kernels as K  # noqa: E402
from fastres.kernels import bn_act_op  # noqa: E402
from fastres.report import environment, output_problem, write_json  # noqa: E402

SWEEP_RECIPES = ("cifar10-94",)   # the net bench/gpu_check.sh's sweep times
SMS = 132                     # H100 SXM; only the slab count (a runtime int) depends on it
# Largest shared memory per block (opt-in), bytes: A100 163 KB, H100/H200 227 KB.
SHARED_LIMIT = {80: 163 * 1024, 86: 99 * 1024, 89: 99 * 1024, 90: 227 * 1024}
REGISTERS_PER_SM = 65536
# tests/test_bn_act.py on a GPU: (shape, ghost) of its CPU-size checks (which run on CUDA when
# present) and of its real-size ones; every activation, fp16 and fp32; and its bf16 checks' shapes.
TEST_CASES = [((2, 40, 5, 25), 0), ((1, 16, 6, 6), 0), ((3, 24, 1, 1), 0), ((8, 96, 8, 8), 0),
              ((1, 16, 1, 1), 0), ((6, 40, 3, 5), 1), ((6, 40, 3, 5), 2), ((6, 40, 3, 5), 4),
              ((512, 64, 32, 32), 32), ((512, 128, 16, 16), 0), ((1000, 256, 7, 7), 32),
              ((512, 512, 4, 4), 0)]
BF16_TEST_CASES = [((2, 40, 5, 25), 0), ((8, 96, 8, 8), 0), ((6, 40, 3, 5), 4), ((512, 64, 32, 32), 32)]
DTYPES = {torch.float16: "fp16", torch.float32: "fp32", torch.bfloat16: "bf16", torch.int32: "i32"}


def load_bench_kernels():
    """bench/kernels.py as a module (not the repository's kernels/ package of the same name)."""
    path = Path(__file__).resolve().parent / "kernels.py"
    spec = importlib.util.spec_from_file_location("bench_kernels", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclasses.dataclass(frozen=True)
class Launch:
    """One distinct compilation: kernel, argument types, constants, alignment marks, warps."""
    fn: object            # the @triton.jit kernel
    signature: tuple      # ((name, type), ...); type "constexpr" for constants
    constants: tuple      # ((name, value), ...)
    aligned: tuple        # names of the arguments marked divisible by 16
    num_warps: int
    fp_fusion: bool | None = None   # enable_fp_fusion as launched (None: Triton's default)


def specialise(fn, args, kwargs) -> Launch:
    """The Launch Triton's launcher would compile for kernel[grid](*args, **kwargs)."""
    options = {k: kwargs.pop(k) for k in ("num_warps", "num_stages", "enable_fp_fusion") if k in kwargs}
    values = dict(zip(fn.arg_names, args), **kwargs)
    signature, constants, aligned = [], [], []
    for param in fn.params:
        name, value = param.name, values[param.name]
        if param.is_constexpr or (type(value) is int and value == 1):
            kind = "constexpr"
            constants.append((name, value))
        elif isinstance(value, torch.Tensor):
            kind = "*" + DTYPES[value.dtype]
            if value.storage_offset() * value.element_size() % 16 == 0:
                aligned.append(name)
        elif isinstance(value, bool):
            kind = "u1"
        elif isinstance(value, int):
            kind = "i32" if -2**31 <= value < 2**31 else "i64"
            if value % 16 == 0:
                aligned.append(name)
        elif isinstance(value, float):
            kind = "fp32"
        else:
            raise TypeError(f"{fn.__name__}: argument {name} of type {type(value).__name__}")
        signature.append((name, kind))
    return Launch(fn, tuple(signature), tuple(constants), tuple(aligned),
                  options.get("num_warps", 4), options.get("enable_fp_fusion"))


class Recorder:
    """Stands in for a @triton.jit kernel: kernel[grid](*args, **kwargs) records the launch."""

    def __init__(self, fn, launches: dict):
        self.fn, self.launches = fn, launches

    def __getitem__(self, grid):
        def record(*args, **kwargs):
            launch = specialise(self.fn, args, dict(kwargs))
            self.launches[launch] = self.launches.get(launch, 0) + 1
        return record


def run_layer(n, c, h, w, act, alpha, ghost, dtype, freeze, eps=1e-5):
    """Every implementation the GPU path calls for one BN layer, on meta tensors."""
    x = torch.empty(n, c, h, w, device="meta", dtype=dtype).contiguous(memory_format=torch.channels_last)
    weight, bias = (torch.empty(c, device="meta") for _ in range(2))
    y, mean, rstd, var = bn_act_op._train_impl(x, weight, bias, eps, act, alpha, ghost)
    bn_act_op._backward_impl(y, x, weight, bias, mean, rstd, eps, act, alpha, ghost, True, not freeze)
    bn_act_op._eval_impl(x, weight, bias, var[0], var[0], eps, act, alpha)
    bn_act_op._backward_impl(y, x, weight, bias, var[0], var[0], eps, act, alpha, 0, False, not freeze)


def find_launches(plan) -> dict:
    """{Launch: how many times it is launched} over plan's (tuning, cases) pairs."""
    launches: dict = {}
    fake_k = type("RecordedKernels", (), {"ACT_CODES": K.ACT_CODES})()
    for name, value in vars(K).items():
        if isinstance(value, triton.runtime.JITFunction):
            setattr(fake_k, name, Recorder(value, launches))
    saved = bn_act_op.K, bn_act_op._target, dict(bn_act_op.GPU_TUNING)
    bn_act_op.K, bn_act_op._target = fake_k, lambda x: (True, SMS)
    try:
        for tuning, cases in plan:
            bn_act_op.GPU_TUNING.update(saved[2], **tuning)
            for case in cases:
                run_layer(*case)
    finally:
        bn_act_op.K, bn_act_op._target = saved[:2]
        bn_act_op.GPU_TUNING.clear()
        bn_act_op.GPU_TUNING.update(saved[2])
    return launches


def recipe_cases(bench, names) -> list:
    cases = []
    for name in names:
        _, batch, layers = bench.recipe_layers(name)
        for c, h, act, alpha, ghost, _count in layers:
            cases += [(batch, c, h, h, act, alpha, ghost, torch.float16, freeze) for freeze in (True, False)]
    return cases


def gpu_test_cases() -> list:
    cases = [(shape, ghost, dtype) for shape, ghost in TEST_CASES for dtype in (torch.float16, torch.float32)]
    cases += [(shape, ghost, torch.bfloat16) for shape, ghost in BF16_TEST_CASES]
    return [(*shape, act, 0.3, ghost, dtype, freeze) for shape, ghost, dtype in cases
            for act in K.ACT_CODES for freeze in (True, False)]


def cuobjdump() -> str | None:
    bundled = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    return str(bundled) if bundled.exists() else shutil.which("cuobjdump")


def disassemble(cubin: bytes, tool: str) -> str:
    """cuobjdump's resource usage and SASS of a cubin, in one call."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "kernel.cubin"
        path.write_bytes(cubin)
        return subprocess.run([tool, "--dump-resource-usage", "--dump-sass", str(path)],
                              capture_output=True, text=True, check=True).stdout


def resource_usage(out: str) -> dict:
    """Registers, stack and local (spilled) bytes of the cubin's one function (disassemble's text)."""
    for line in out.splitlines():
        if "REG:" in line:
            fields = dict(item.split(":", 1) for item in line.split() if ":" in item)
            return {"registers": int(fields["REG"]), "stack_bytes": int(fields["STACK"]),
                    "local_bytes": int(fields["LOCAL"])}
    raise RuntimeError(f"cuobjdump printed no REG: line:\n{out}")


def loop_instructions(sass: str) -> int | None:
    """SASS instructions in the body of the first loop of the code (disassemble's text; from the
    target of its first backward branch through that branch): a kernel's row loop, which comes
    before any finalize tail in the source; None without a loop."""
    code = [(int(m.group(1), 16), m.group(2)) for m in
            re.finditer(r"^\s*/\*([0-9a-f]{4,})\*/\s+([^;]*);", sass, re.MULTILINE)]
    for i, (address, text) in enumerate(code):
        branch = re.search(r"\bBRA\b.*?\b0x([0-9a-f]+)\b", text)
        if branch and int(branch.group(1), 16) < address:
            target = int(branch.group(1), 16)
            return sum(1 for a, _ in code[:i + 1] if a >= target)
    return None


def compile_kernel(launch: Launch, arch: int):
    """Triton's compiled kernel (its asm: ttir ... ptx, cubin) of one launch for sm_<arch>, as the
    launcher would compile it; raises what Triton's compiler raises."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    index = {name: i for i, name in enumerate(launch.fn.arg_names)}
    attrs = {(index[name],): [["tt.divisibility", 16]] for name in launch.aligned}
    source = ASTSource(launch.fn, dict(launch.signature), dict(launch.constants), attrs)
    options = {"num_warps": launch.num_warps}
    if launch.fp_fusion is not None:
        options["enable_fp_fusion"] = launch.fp_fusion
    return triton.compile(source, target=GPUTarget("cuda", arch, 32), options=options)


def compile_launch(launch: Launch, arch: int, tool: str | None) -> dict:
    """Compile one launch for sm_<arch> to a cubin; raises what Triton's compiler raises."""
    kernel = compile_kernel(launch, arch)
    shared = kernel.metadata.shared
    row = {"shared_bytes": shared, "shared_ok": shared <= SHARED_LIMIT.get(arch, 48 * 1024),
           # asynchronous global-to-shared copies: the software-pipelined loads of STAGES >= 2
           "async_copies": sum(line.lstrip().startswith("cp.async.c") for line in kernel.asm["ptx"].splitlines()),
           # double-precision work beyond declaring, reading and converting an fp64 argument
           "fp64_ops": sum(".f64" in line and not line.lstrip().startswith((".param", "ld.param", "cvt."))
                           for line in kernel.asm["ptx"].splitlines())}
    if tool:
        text = disassemble(kernel.asm["cubin"], tool)
        row.update(resource_usage(text))
        per_warp = -(-row["registers"] * 32 // 256) * 256        # allocated in units of 256
        row["programs_per_sm_by_registers"] = REGISTERS_PER_SM // (per_warp * launch.num_warps)
        consts = dict(launch.constants)
        if "STAGES" in consts:                   # a streaming kernel: a row loop over tiles
            n = loop_instructions(text)
            per_thread = consts["BLOCK_M"] * consts["BLOCK_C"] / (32 * launch.num_warps)
            row["loop_instructions"] = n
            row["instructions_per_element"] = None if n is None else round(n / per_thread, 2)
    return row


@triton.jit
def _probe_kernel(x_ptr, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    tl.store(x_ptr + offs, tl.load(x_ptr + offs) + 1.0)


def describe(launch: Launch) -> dict:
    """A launch as the result rows give it (what _knob_key and the summaries read)."""
    return {"kernel": launch.fn.__name__, "num_warps": launch.num_warps, "enable_fp_fusion": launch.fp_fusion,
            "constants": dict(launch.constants), "signature": dict(launch.signature),
            "aligned": list(launch.aligned)}


def _data_key(r) -> str:
    """What of a launch's data changes its code: ", fp32" or ", bf16" for fp32 or bf16
    activations (the recipes' are fp16), ", C % 16 != 0" where the channel count is not marked
    divisible by 16 (the tests' C = 24 and 40): Triton then cannot prove a row 16-byte aligned and loads element by element,
    in more instructions and registers; in fp16 that is 2 bytes a load, below an asynchronous
    copy's 4, so such launches are not pipelined (fp32 ones are: compile check of e75417a)."""
    x = r["signature"].get("x_ptr", "")     # the finalize kernels have none: their data is fp32 scratch
    unaligned = "C" in r["signature"] and r["signature"]["C"] != "constexpr" and "C" not in r["aligned"]
    return {"*fp32": ", fp32", "*bf16": ", bf16"}.get(x, "") + (", C % 16 != 0" if unaligned else "")


def _knob_key(r) -> str:
    c = r["constants"]
    key = f"{c.get('BLOCK_M', c.get('BLOCK_P'))}x{c['BLOCK_C']}, {r['num_warps']} warps"
    key += f", stages {c['STAGES']}" if c.get("STAGES", 1) > 1 else ""
    key += ", acc2d" if c.get("TWO_D") else ""
    key += f", fused finalize {c['BLOCK_P']}x{c['BLOCK_CF']}" if c.get("FUSE_FIN") else ""
    return key + _data_key(r)


def instructions_by_act(rows) -> dict:
    """Most row-loop instructions per element for each activation and knob setting:
    {"gelu, 32x64, 4 warps[, ...]": 38.0} (the statistics kernel, which has no activation:
    "-, ...")."""
    names = {code: name for name, code in K.ACT_CODES.items()}
    out: dict = {}
    for r in rows:
        if r.get("instructions_per_element") is not None:
            key = f"{names.get(r['constants'].get('ACT'), '-')}, {_knob_key(r)}"
            out[key] = max(out.get(key, 0), r["instructions_per_element"])
    return dict(sorted(out.items()))


def by_tile(rows) -> dict:
    """Most registers per thread and shared bytes for each tile shape and knob setting:
    {"BLOCK_MxBLOCK_C, W warps[, stages S][, acc2d][, fused finalize PxCF]": {...}} (BLOCK_P
    rows for the finalize kernels; with --sweep, the knobs' cost: the tile is bench/kernels.py's
    `tile` knob)."""
    out: dict = {}
    for r in rows:
        worst = out.setdefault(_knob_key(r), {"registers": 0, "shared_bytes": 0})
        worst["registers"] = max(worst["registers"], r["registers"])
        worst["shared_bytes"] = max(worst["shared_bytes"], r["shared_bytes"])
    return dict(sorted(out.items()))


def pipelined_by_stages(rows) -> dict:
    """{"stages=S[, fp32][, C % 16 != 0]": "pipelined/compiled"} over rows of kernels with a
    STAGES constant."""
    out: dict = {}
    for r in rows:
        if "STAGES" in r["constants"]:
            key = f"stages={r['constants']['STAGES']}{_data_key(r)}"
            done, total = out.get(key, (0, 0))
            out[key] = (done + (r["async_copies"] > 0), total + 1)
    return {k: f"{a}/{b}" for k, (a, b) in sorted(out.items())}


def check_api() -> str | None:
    """Why this triton cannot run the check (None: it can): a trivial kernel must compile
    through compile_launch. Written for triton 3.6 (also runs under 3.8 and 3.9); triton 3.0's
    ASTSource takes its arguments in another form."""
    if "nvidia" not in triton.backends.backends:
        return f"triton {triton.__version__} has no nvidia backend"
    probe = Launch(_probe_kernel, (("x_ptr", "*fp32"), ("BLOCK", "constexpr")), (("BLOCK", 16),),
                   ("x_ptr",), 4, True)
    try:
        compile_launch(probe, 90, None)
    except Exception as e:
        return f"triton {triton.__version__}: its compiler API differs ({type(e).__name__}: {e})"[:500]
    return None


def main(argv=None) -> int:
    p = Parser(description=__doc__.splitlines()[0])
    p.add_argument("--recipes", default="all", help="comma-separated GPU recipes, or all (default)")
    p.add_argument("--tests", action="store_true", help="add tests/test_bn_act.py's GPU launches")
    p.add_argument("--sweep", action="store_true",
                   help="add every knob set bench/kernels.py's staged sweep can reach, on the nets it sweeps")
    p.add_argument("--arch", default="90", help="comma-separated compute capabilities, e.g. 80,90 (default 90)")
    p.add_argument("--out", help="write the results as JSON to this file")
    p.add_argument("--rows", action="store_true",
                   help="write every compiled variant to --out (default: the summary and failures)")
    args = p.parse_args(argv)
    if args.out and (problem := output_problem(args.out)):
        p.error(f"--out {problem}")
    try:
        archs = [int(a) for a in args.arch.split(",")]
    except ValueError:
        p.error(f"--arch: expected comma-separated integers such as 80,90, got {args.arch!r}")
    if min(archs) < 50:         # below, Triton's LLVM can abort the process (--arch 12 did, triton 3.6)
        p.error(f"--arch: compute capabilities start at 50 (5.0, the oldest that triton 3.6's bundled "
                f"ptxas, CUDA 12.8, compiles for), got {args.arch!r}")
    reason = check_api()
    if reason:
        print(f"compile_check: skipped: {reason}")
        return 3
    bench = load_bench_kernels()
    names = bench.recipe_names(args.recipes)
    for name in names:
        if name not in bench.recipe_names("all"):
            p.error(f"--recipes: {name!r} is not a GPU recipe; choose from {', '.join(bench.recipe_names('all'))}")
    # The recipes' and the tests' layers at the default knobs (GPU_TUNING, with FASTRES_BN_TUNING).
    recipes = recipe_cases(bench, names)
    plan = [({}, recipes + (gpu_test_cases() if args.tests else []))]
    # The sweep's later stages change knobs over the best point so far: every combination they
    # can reach, on the layers of the nets the sweep times (gpu_check.sh's), is a launch the
    # sweep makes. (Training of other recipes with its pick is checked on the GPU, by gpu_check's
    # quick check against PyTorch before the recipes run.)
    swept = recipe_cases(bench, SWEEP_RECIPES) if args.sweep else []
    plan += [(knobs, swept) for knobs in (bench.sweep_reachable(bench.SWEEP_STAGES) if args.sweep else [])]
    launches = find_launches(plan)
    tool = cuobjdump()
    print(f"{sum(len(cases) for _, cases in plan)} layer cases: {sum(launches.values())} launches, "
          f"{len(launches)} distinct; compiling for sm_{', sm_'.join(map(str, archs))} "
          f"(triton {triton.__version__}{'' if tool else ', no cuobjdump: no register counts'})")
    rows, failures, start = [], 0, time.perf_counter()
    for launch in sorted(launches, key=lambda la: (la.fn.__name__, repr(la))):
        for arch in archs:
            row = {**describe(launch), "arch": arch, "launches": launches[launch]}
            t0 = time.perf_counter()
            try:
                row.update(compile_launch(launch, arch, tool))
                row["ok"] = row["shared_ok"]
            except Exception as e:
                row.update(ok=False, error=f"{type(e).__name__}: {e}"[:2000])
            row["compile_s"] = round(time.perf_counter() - t0, 3)
            if row["compile_s"] > 10:
                print(f"  slow: {row['compile_s']:.0f} s for sm_{arch} {launch.fn.__name__} "
                      f"{dict(launch.constants)} warps={launch.num_warps}")
            if not row["ok"]:
                failures += 1
                print(f"FAILED sm_{arch} {launch.fn.__name__} {dict(launch.constants)} "
                      f"warps={launch.num_warps}: {row.get('error') or 'shared memory over the limit'}")
            rows.append(row)
    by_kernel: dict = {}
    for row in rows:
        if "registers" in row:
            k = by_kernel.setdefault((row["kernel"], row["arch"]), [])
            k.append(row)
    summary = {}
    for (kernel, arch), krows in sorted(by_kernel.items()):
        worst = max(krows, key=lambda r: r["registers"])
        summary[f"{kernel}@sm_{arch}"] = {
            "compiled": len(krows), "max_registers": worst["registers"],
            "max_registers_at": {**worst["constants"], "num_warps": worst["num_warps"]},
            "max_spilled_bytes": max(r["local_bytes"] for r in krows),
            "max_shared_bytes": max(r["shared_bytes"] for r in krows),
            # variants with asynchronous (pipelined) loads, by the STAGES they were compiled with
            "async_copy_variants_by_stages": pipelined_by_stages(krows),
            "min_programs_per_sm_by_registers": min(r["programs_per_sm_by_registers"] for r in krows),
            "max_by_tile": by_tile(krows),
            "instructions_per_element": instructions_by_act(krows)}
        print(f"  {kernel} sm_{arch}: {len(krows)} variants, registers <= {worst['registers']} "
              f"({worst['constants']}), spills <= {summary[f'{kernel}@sm_{arch}']['max_spilled_bytes']} B, "
              f"shared <= {summary[f'{kernel}@sm_{arch}']['max_shared_bytes']} B"
              + "".join(f", {k} pipelined {v}"
                        for k, v in summary[f"{kernel}@sm_{arch}"]["async_copy_variants_by_stages"].items()))
        per_element = summary[f"{kernel}@sm_{arch}"]["instructions_per_element"]
        if per_element and not args.sweep:
            print("    row-loop instructions per element: "
                  + "; ".join(f"{k}: {v:g}" for k, v in per_element.items()))
    seconds = time.perf_counter() - start
    print(f"compile_check: {len(rows) - failures}/{len(rows)} compiled in {seconds:.0f} s"
          + (f"; {failures} FAILED" if failures else ""))
    if args.out:
        result = {"benchmark": "compile_check", **environment("none (compiled only)"),
                  "triton": triton.__version__, "archs": archs, "recipes": names, "tests": args.tests,
                  "sweep": args.sweep, "sms": SMS, "gpu_tuning": dict(bn_act_op.GPU_TUNING),
                  "compiled": len(rows), "failed": failures, "seconds": seconds,
                  "summary": summary,
                  "kernels": rows if args.rows else [r for r in rows if not r["ok"]]}
        write_json(args.out, result)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
