"""bench/compile_check.py: the fused op's kernels compile for a GPU with Triton's own compiler.

The other kernel tests run in Triton's interpreter, which accepts code that the GPU compiler
rejects; this check closes that gap without a GPU. It runs in subprocesses: the script must
import the kernels without TRITON_INTERPRET, which tests/conftest.py sets for this process.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fastres.kernels.bn_act_kernels import ACT_CODES
from helpers import load_bench

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "compile_check.py"
KERNELS = {"bn_stats_kernel", "bn_finalize_kernel", "bn_apply_kernel", "bn_bwd_reduce_kernel",
           "bn_bwd_finalize_kernel", "bn_bwd_dx_kernel"}


def python(args, tmp_path, interpret=False, tuning=""):
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "FASTRES_BN_TUNING")}
    env.update(OMP_NUM_THREADS="1", TRITON_CACHE_DIR=str(tmp_path / "triton-cache"),
               **({"TRITON_INTERPRET": "1"} if interpret else {}), FASTRES_BN_TUNING=tuning)
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=900)


def skip_if_unsupported(proc):
    if proc.returncode == 3 and "skipped" in proc.stdout:     # triton without this compiler API
        pytest.skip(proc.stdout.strip())


@pytest.mark.parametrize("args, message", [(["--arch", "8.0"], "expected comma-separated integers"),
                                           (["--arch", "90,12"], "compute capabilities start at 50 (5.0"),
                                           (["--out", "{tmp}"], "is a folder, not a file")])
def test_bad_arguments_are_one_error_line(tmp_path, args, message):
    # --arch 12 reached Triton's compiler, whose LLVM aborted the process (triton 3.6); a folder
    # as --out was found after every compile (IsADirectoryError), before 2026-12-04
    out = python([str(SCRIPT), *(a.format(tmp=tmp_path) for a in args)], tmp_path)
    assert out.returncode == 2 and message in out.stderr.strip().splitlines()[-1] and "Traceback" not in out.stderr


def test_every_recipe_launch_compiles_for_sm90(tmp_path):
    out = tmp_path / "compile.json"
    proc = python([str(SCRIPT), "--rows", "--out", str(out)], tmp_path)
    skip_if_unsupported(proc)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    rows = result["kernels"]
    assert result["failed"] == 0 and result["compiled"] == len(rows) and result["archs"] == [90]
    assert {r["kernel"] for r in rows} == KERNELS
    assert all(r["ok"] and r["shared_ok"] and r["signature"] for r in rows)
    # Every launch asks for FMA contraction itself (triton 3.9 warns that its default turns it
    # off in 3.10), and was compiled with it.
    assert all(r["enable_fp_fusion"] is True for r in rows)
    # Every activation the GPU recipes use was compiled, in training (batch statistics) and
    # eval (running statistics) form: read off the recipes' own models.
    bench = load_bench("kernels")
    used = {ACT_CODES[act] for name in bench.recipe_names("all")
            for _c, _h, act, *_ in bench.recipe_layers(name)[2]}
    assert {0, 2, 3, 4} <= used            # airbench96's identity BNs, CELU, GELU, SiLU
    for from_var in (False, True):
        assert {r["constants"]["ACT"] for r in rows if r["kernel"] == "bn_apply_kernel"
                and r["constants"]["FROM_VAR"] is from_var} == used
    streaming = [r for r in rows if "STAGES" in r["constants"]]
    if "registers" in rows[0]:             # cuobjdump is bundled with triton's wheels
        assert all(r["local_bytes"] == 0 for r in rows), "a kernel spills registers at the default knobs"
        assert all(r["programs_per_sm_by_registers"] >= 1 for r in rows)
        # Every streaming kernel's row loop is found in its SASS, and its size follows the code:
        # each activation's math costs instructions over the identity's, in every kernel.
        assert all(r["loop_instructions"] > 0 for r in streaming)
        for kernel in ("bn_apply_kernel", "bn_bwd_reduce_kernel", "bn_bwd_dx_kernel"):
            per_act = {}
            for r in streaming:
                if r["kernel"] == kernel and r["constants"]["BLOCK_C"] == 128:
                    per_act[r["constants"]["ACT"]] = r["instructions_per_element"]
            assert all(per_act[0] < per_act[act] for act in (2, 3, 4)), (kernel, per_act)
            # The activations' cheap forms (bn_act_kernels._normal_cdf, _sigmoid, _exp_over), sm_90,
            # triton 3.6, as (apply, backward sums, dx) instructions per element at the defaults
            # (32x128 tiles, stages 3, acc2d): CELU 12.75, 16.2, 16.6; GELU 25.75, 33.3, 33.7; SiLU
            # 12.75, 19.3, 19.6. At 16x128, stages 1, acc2d 0: CELU 12.1, 23.6, 15.7; GELU 25.1,
            # 40.8, 32.8; SiLU 12, 26.6, 18.6 (tl.erf, tl.sigmoid and divisions, x_hat formed:
            # CELU 18.6, 31, 23.1; GELU 38, 59.8, 51.8; SiLU 19.1, 34.7, 26.8).
            limits = {"bn_apply_kernel": (15, 30, 15), "bn_bwd_reduce_kernel": (28, 50, 31),
                      "bn_bwd_dx_kernel": (20, 40, 23)}[kernel]
            assert all(per_act[act] < limit for act, limit in zip((2, 3, 4), limits)), (kernel, per_act)
        # The statistics kernel at the default acc2d=1 accumulates in 2-D registers and reduces
        # once per program: 7.5 per element at 32x128 (17.9 at 16x128 reduced per tile, acc2d=0;
        # 27.6 with three fp32 divisions per channel and tile).
        stats = [r["instructions_per_element"] for r in streaming if r["kernel"] == "bn_stats_kernel"
                 and r["constants"]["BLOCK_C"] == 128 and r["constants"]["TWO_D"]]
        assert stats and max(stats) < 10, stats
    # The default stages=3: every row loop keeps loads in flight (asynchronous copies); the
    # finalize kernels have no row loop.
    assert all((r["async_copies"] > 0) == (r in streaming) for r in rows)
    assert all(r["fp64_ops"] == 0 for r in rows)         # all single precision


@pytest.mark.parametrize("fuse", [0, 1], ids=["finalize-kernels", "fused-finalize"])
def test_pipelined_row_loops_compile_to_asynchronous_copies(tmp_path, fuse):
    """stages=3 must reach the compiled code of every streaming kernel (Triton pipelines a loop
    without tl.dot only when the loop asks), in shared memory the GPU has; the finalize kernels,
    which have no row loop, stay as they are. With fuse_finalize=1 the reductions compile with
    their finalize tail and the finalize kernels are not launched."""
    out = tmp_path / "compile.json"
    proc = python([str(SCRIPT), "--recipes", "cifar10-94", "--rows", "--out", str(out)], tmp_path,
                  tuning=f"stages=3,fuse_finalize={fuse}")
    skip_if_unsupported(proc)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = json.loads(out.read_text())["kernels"]
    streaming = [r for r in rows if "STAGES" in r["constants"]]
    finalize = {"bn_finalize_kernel", "bn_bwd_finalize_kernel"}
    assert {r["kernel"] for r in streaming} == KERNELS - finalize
    assert all(r["constants"]["STAGES"] == 3 and r["async_copies"] > 0 and r["shared_ok"] for r in streaming)
    assert all(r["async_copies"] == 0 for r in rows if r not in streaming)
    assert {r["kernel"] for r in rows} == (KERNELS - finalize if fuse else KERNELS)
    assert {r["constants"].get("FUSE_FIN") for r in rows if "FUSE_FIN" in r["constants"]} == {bool(fuse)}


# A plain-int global read inside a kernel: the interpreter runs it, the GPU compiler refuses it
# (the reason bn_act_kernels.py makes its activation codes tl.constexpr objects).
BROKEN = '''
import triton
import triton.language as tl

SCALE = 2


@triton.jit
def scale_kernel(x_ptr, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    tl.store(x_ptr + offs, tl.load(x_ptr + offs) * SCALE)
'''

PROBE = '''
import json, os, sys
sys.path[:0] = [sys.argv[1], sys.argv[2]]
import torch
if os.environ.get("TRITON_INTERPRET") == "1":
    import broken_kernel
    x = torch.ones(16)
    broken_kernel.scale_kernel[(1,)](x, BLOCK=16)
    print(json.dumps({"interpreter": x.tolist()}))
    sys.exit(0)
import compile_check as cc
import broken_kernel
from fastres.kernels import bn_act_kernels as K
if cc.check_api():
    print("skipped: " + cc.check_api())
    sys.exit(3)
out = {}
launch = cc.Launch(broken_kernel.scale_kernel, (("x_ptr", "*fp32"), ("BLOCK", "constexpr")),
                   (("BLOCK", 16),), ("x_ptr",), 4)
try:
    cc.compile_launch(launch, 90, None)
    out["broken"] = "compiled"
except Exception as e:
    out["broken"] = type(e).__name__ + ": " + str(e)
x = torch.empty(4, 64, 3, 3, device="meta", dtype=torch.float16)
rows = x.permute(0, 2, 3, 1).reshape(-1, 64)
spec = cc.specialise(K.bn_stats_kernel, (rows, rows[1:], x.reshape(-1)[3:], rows, rows, rows, rows,
                                         1, 64, 2**33, 17, 48, 1e-5),
                     {"BLOCK_M": 16, "BLOCK_C": 64, "TWO_D": False, "STAGES": 2, "FUSE_FIN": False,
                      "BLOCK_P": 1, "BLOCK_CF": 1, "num_warps": 8})
out["spec"] = [dict(spec.signature), dict(spec.constants), list(spec.aligned), spec.num_warps]
print(json.dumps(out))
'''


def test_compiler_catches_what_the_interpreter_lets_through(tmp_path):
    (tmp_path / "broken_kernel.py").write_text(BROKEN)
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    args = [str(probe), str(tmp_path), str(ROOT / "bench")]
    interpreted = python(args, tmp_path, interpret=True)
    assert interpreted.returncode == 0, interpreted.stderr
    assert json.loads(interpreted.stdout)["interpreter"] == [2.0] * 16
    proc = python(args, tmp_path)
    skip_if_unsupported(proc)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert "SCALE" in out["broken"] and "global" in out["broken"], out["broken"]
    # The launcher's specialisation: pointers 16-byte aligned marked (x at offset 0, rows[1:]
    # 128 bytes in; not the one 6 bytes in), ints divisible by 16 marked, an int equal to 1
    # made a constant, a value past int32 passed as i64.
    signature, constants, aligned, warps = out["spec"]
    assert signature == {"x_ptr": "*fp16", "pmean_ptr": "*fp16", "pm2_ptr": "*fp16", "mean_ptr": "*fp16",
                         "rstd_ptr": "*fp16", "var_ptr": "*fp16", "count_ptr": "*fp16", "M": "constexpr",
                         "C": "i32", "R": "i64", "S": "i32", "SLAB": "i32", "eps": "fp32",
                         "BLOCK_M": "constexpr", "BLOCK_C": "constexpr", "TWO_D": "constexpr",
                         "STAGES": "constexpr", "FUSE_FIN": "constexpr", "BLOCK_P": "constexpr",
                         "BLOCK_CF": "constexpr"}
    assert constants == {"M": 1, "BLOCK_M": 16, "BLOCK_C": 64, "TWO_D": False, "STAGES": 2, "FUSE_FIN": False,
                         "BLOCK_P": 1, "BLOCK_CF": 1}
    assert aligned == ["x_ptr", "pmean_ptr", "mean_ptr", "rstd_ptr", "var_ptr", "count_ptr", "C", "R",
                       "SLAB"] and warps == 8


FP64_PROBE = '''
import json, sys
sys.path[:0] = [sys.argv[1]]
import dataclasses
import torch
import compile_check as cc
if cc.check_api():
    print("skipped: " + cc.check_api())
    sys.exit(3)
# One CELU layer (alpha reaches every activation formula), trained and frozen, at the default
# knobs (pipelined, sums accumulated in 2-D) and with unpipelined sums reduced per tile and the
# fused finalize (the branch that failed on the H200).
cases = [(4, 40, 5, 5, "celu", 0.3, ghost, torch.float16, freeze) for ghost in (0, 2) for freeze in (True, False)]
launches = cc.find_launches([({}, cases), ({"acc2d": 0, "stages": 1, "fuse_finalize": 1}, cases)])
out = {"compiled": [], "failed": {}}
for launch in launches:
    signature = tuple((n, "fp64" if t == "fp32" else t) for n, t in launch.signature)
    if signature == launch.signature:
        continue
    name = launch.fn.__name__
    try:
        row = cc.compile_launch(dataclasses.replace(launch, signature=signature), 90, None)
        out["compiled"].append(name)
        if row["fp64_ops"]:
            out["failed"][name] = f"{row['fp64_ops']} fp64 instructions"
    except Exception as e:
        out["failed"][name] = str(e).splitlines()[-1][:300]
print(json.dumps(out))
'''


def test_kernels_compile_with_float_arguments_typed_fp64(tmp_path):
    """Under torch.compile the triton_op twins are launched by Inductor, which types a Python
    float argument (eps, alpha) fp64 (torch._inductor.config._use_fp64_for_unbacked_floats; so
    in torch 2.11 and 2.13). A kernel that lets it into its loop-carried sums fails to compile
    ("sum_g has initial type fp32 but is re-assigned to fp64": an H200, torch 2.11, 2026-12-04,
    test_gpu_compiled_net_matches_eager[*-triton_op]); one that lets it into its arithmetic
    computes in double precision. Every kernel must cast them to fp32 first."""
    probe = tmp_path / "probe.py"
    probe.write_text(FP64_PROBE)
    proc = python([str(probe), str(ROOT / "bench")], tmp_path)
    skip_if_unsupported(proc)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["failed"] == {}
    assert set(out["compiled"]) == KERNELS - {"bn_bwd_finalize_kernel"}   # the ones taking eps or alpha


def run_probe(source: str, tmp_path) -> dict:
    """Run a probe script (argument: bench/) without the interpreter; its JSON output. Skips
    where this triton lacks the compiler API (the probe exits 3 saying so)."""
    probe = tmp_path / "probe.py"
    probe.write_text(source)
    proc = python([str(probe), str(ROOT / "bench")], tmp_path)
    skip_if_unsupported(proc)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


ALIGNMENT_PROBE = '''
import json, sys
sys.path[:0] = [sys.argv[1]]
import torch
import compile_check as cc
from fastres.kernels import bn_act_kernels as K
if cc.check_api():
    print("skipped: " + cc.check_api())
    sys.exit(3)
rows = []
for c, dtype in ((64, torch.float16), (40, torch.float16), (64, torch.float32), (64, torch.bfloat16)):
    x = torch.empty(256 * c, device="meta", dtype=dtype)
    part = torch.empty(8 * c, device="meta", dtype=torch.float32)
    spec = cc.specialise(K.bn_stats_kernel, (x, part, part, part, part, part, part, 256, c, 256, 8, 32, 1e-5),
                         {"BLOCK_M": 64, "BLOCK_C": 64, "TWO_D": True, "STAGES": 3, "FUSE_FIN": False,
                          "BLOCK_P": 1, "BLOCK_CF": 1, "num_warps": 4})
    rows.append({**cc.describe(spec), **cc.compile_launch(spec, 90, None)})
part = torch.empty(8 * 64, device="meta", dtype=torch.float32)     # the finalize: fp32 partials of fp16 data
spec = cc.specialise(K.bn_finalize_kernel, (part, part, part, part, part, 256, 64, 256, 8, 32, 1e-5),
                     {"BLOCK_P": 8, "BLOCK_C": 64})
rows.append({**cc.describe(spec), **cc.compile_launch(spec, 90, None)})
print(json.dumps({"pipelined": cc.pipelined_by_stages(rows), "keys": [cc._knob_key(r) for r in rows]}))
'''


def test_summaries_keep_unaligned_and_fp32_launches_apart(tmp_path):
    """A channel count not divisible by 16 (the tests' C = 24 and 40) leaves Triton unable to
    prove a row 16-byte aligned: in fp16 the statistics kernel, pipelined (stages=3), then
    compiles without asynchronous copies. The summaries count such launches, and fp32 and bf16
    ones, under keys of their own, so that a test shape's code never stands for a recipe's (the
    compile check of fe06ec5 reported 374 of 399 stages=3 launches pipelined, the kinds mixed)."""
    out = run_probe(ALIGNMENT_PROBE, tmp_path)
    assert out["keys"] == ["64x64, 4 warps, stages 3, acc2d", "64x64, 4 warps, stages 3, acc2d, C % 16 != 0",
                           "64x64, 4 warps, stages 3, acc2d, fp32", "64x64, 4 warps, stages 3, acc2d, bf16",
                           "8x64, 4 warps"]
    assert out["pipelined"] == {"stages=3": "1/1", "stages=3, C % 16 != 0": "0/1", "stages=3, fp32": "1/1",
                                "stages=3, bf16": "1/1"}


CODE_FACTS_PROBE = '''
import importlib.util, json, sys
sys.path[:0] = [sys.argv[1]]
import torch
import compile_check as cc          # first: it clears TRITON_INTERPRET before the kernels load
from fastres.kernels import bn_act_kernels as K
if cc.check_api() or cc.cuobjdump() is None:
    print("skipped: " + (cc.check_api() or "no cuobjdump"))
    sys.exit(3)
spec = importlib.util.spec_from_file_location("bench_kernels", sys.argv[1] + "/kernels.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)
x = torch.empty(256 * 64, device="meta", dtype=torch.float16)
part = torch.empty(8 * 64, device="meta", dtype=torch.float32)
out = {}
for name, args, kwargs in (
        ("stats", (x, part, part, part, part, part, part, 256, 64, 256, 8, 32, 1e-5),
         {"BLOCK_M": 64, "BLOCK_C": 64, "TWO_D": True, "STAGES": 3, "FUSE_FIN": False, "BLOCK_P": 1,
          "BLOCK_CF": 1, "num_warps": 4}),
        ("finalize", (part, part, part, part, part, 256, 64, 256, 8, 32, 1e-5), {"BLOCK_P": 8, "BLOCK_C": 64})):
    kernel = K.bn_stats_kernel if name == "stats" else K.bn_finalize_kernel
    launch = cc.specialise(kernel, args, dict(kwargs))
    expected = cc.compile_launch(launch, 90, cc.cuobjdump())
    # kernel[grid](...) returns the compiled kernel on a GPU; compile_kernel makes the same here
    facts = bench.code_facts(cc.compile_kernel(launch, 90), kwargs)
    out[name] = {"expected": {k: expected[k] for k in ("registers", "instructions_per_element") if k in expected},
                 "facts": facts}
print(json.dumps(out))
'''


def test_kernel_breakdown_reads_the_launched_kernels_code(tmp_path):
    """bench/kernels.py's breakdown gives each kernel launched on a GPU its registers and, for
    the row-loop kernels, instructions per element, from the kernel object the launch returns:
    the counts bench/compile_check.py makes of the same launch."""
    out = run_probe(CODE_FACTS_PROBE, tmp_path)
    assert out["stats"]["facts"] == out["stats"]["expected"]
    assert set(out["stats"]["facts"]) == {"registers", "instructions_per_element"}
    assert 2 < out["stats"]["facts"]["instructions_per_element"] < 20 and out["stats"]["facts"]["registers"] > 16
    assert out["finalize"]["facts"] == out["finalize"]["expected"] and set(out["finalize"]["facts"]) == {"registers"}
