"""bench/results_table.py: README rows carry exactly the numbers of gpu_check's result files."""
import json

from fastres.report import summarize
from helpers import load_bench

results_table = load_bench("results_table")
recipe_json = load_bench("recipe_json")

GPU_ENV = {"device": "cuda", "gpu": "NVIDIA H100 80GB HBM3", "torch": "2.11.0", "commit": "abc1234" + "0" * 33}


def recipe_file(tmp_path, name, accs, times, runs_asked=None, flags="", fallback=False):
    records = [{"type": "start", "config": {"runs": runs_asked or len(accs), "target": 0.94}, "env": GPU_ENV}]
    records += [{"type": "run", "seed": i, "accuracy": a, "time_s": t} for i, (a, t) in enumerate(zip(accs, times))]
    if runs_asked is None:                  # finished: the run log ends with its summary
        records.append({"type": "summary", **summarize(accs, times, 0.94)})
    result = recipe_json.build(records, "cifar10-94", flags, fallback)
    path = tmp_path / name
    path.write_text(json.dumps(result))
    return path


def test_recipe_mfu_and_kernel_rows(tmp_path, capsys):
    full = recipe_file(tmp_path, "2026-12-01-h100-80gb-hbm3-abc1234-cifar10-94.json",
                       [0.9400, 0.9410, 0.9420], [2.5, 2.6, 2.7])
    short = recipe_file(tmp_path, "2026-12-01-h100-80gb-hbm3-abc1234-cifar10-94-more-epochs.json",
                        [0.9390], [2.75], runs_asked=25, flags="--epochs 10.9", fallback=True)
    mfu = tmp_path / "2026-12-01-h100-80gb-hbm3-abc1234-cifar10-94-mfu.json"
    mfu.write_text(json.dumps({"benchmark": "mfu", "recipe": "cifar10-94", "env": GPU_ENV, "runs": 3,
                               "total_flops": 3.6e14, "time_s_mean": 2.6, "achieved_flops_per_s": 3.6e14 / 2.6,
                               "matmul_flops_per_s": 7.0e14, "mfu": 3.6e14 / 2.6 / 7.0e14}))
    kernels = tmp_path / "2026-12-01-h100-80gb-hbm3-abc1234-kernels.json"
    kernels.write_text(json.dumps({
        "device": "NVIDIA H100 80GB HBM3", "torch": "2.11.0", "triton": "3.6.0", "copy_gbs": 2900.4, "complete": True,
        "layers": [], "summary": {"per_recipe": {"cifar10-94": {
            "batch": 1024, "step_ms": {"fused": 1.0, "eager": 3.0, "compiled": 1.5}, "fused_vs_compiled": 1.5,
            "goal_1_3x_met": True, "fused_vs_compiled_graph": 1.25,
            "step_ms_as_in_training": {"fused": 0.8, "eager": 0.9, "compiled": 0.88}, "fused_vs_compiled_as_in_training": 1.1}},
            "layers_ge_32MB": 4, "layers_ge_32MB_at_80pct_copy": ["a", "b", "c"], "pct_copy_timing": "CUDA graphs"}}))
    env = tmp_path / "2026-12-01-h100-80gb-hbm3-abc1234-cifar-env.json"
    env.write_text(json.dumps(GPU_ENV))
    assert results_table.main([str(p) for p in (full, short, mfu, kernels, env)]) == 0
    out, err = capsys.readouterr()
    rows = out.strip().splitlines()
    assert len(rows) == 4 and "cifar-env.json: no row format" in err
    # p: t = 0.1 / (0.1 / sqrt 3) = 1.732 with 2 degrees of freedom, one-sided 0.1127
    assert rows[0] == (
        "| `cifar10-94` | NVIDIA H100 80GB HBM3, torch 2.11.0 | 2026-12-01 | abc1234 | 3 | test accuracy "
        "94.10 ± 0.10% (min 94.00%, max 94.20%, 3/3 >= 94%, one-sided t-test p = 0.11 against a mean <= 94%), "
        f"time-to-accuracy 2.600 ± 0.100 s (min 2.500 s) | `{full.as_posix()}` |")
    assert rows[1].startswith("| `cifar10-94` `--epochs 10.9` (PyTorch's BN: the fused kernel failed its check) |")
    assert "| 1 of 25 (cut short) | test accuracy 93.90 ± 0.00% (min 93.90%, max 93.90%, 0/1 >= 94%)," in rows[1]
    assert "| 3 | MFU 19.8%: 360.0 TFLOP per run" in rows[2] and "138.5 TFLOP/s" in rows[2] and "700.0 TFLOP/s" in rows[2]
    assert "dense matmul rate (fp16 on a GPU) of 700.0" in rows[2]    # a file from before its "matmul" key
    assert rows[3].startswith("| fused BN+act kernel (`bench/kernels.py`) | NVIDIA H100 80GB HBM3, torch 2.11.0, "
                              "triton 3.6.0 | 2026-12-01 | abc1234 | — | cifar10-94 (batch 1024): BN fwd+bwd per "
                              "training step fused 1.000 ms, eager 3.000 ms, compiled 1.500 ms = 1.50x compiled "
                              "(goal 1.3x met); as CUDA graphs 1.25x; with the L2 cache as in training fused "
                              "0.800 ms, compiled 0.880 ms = 1.10x; copy bandwidth 2900 GB/s; layers >= 32 MB "
                              "at >= 80% of it (forward and backward, CUDA graphs): 3 of 4 |")


def test_mfu_row_of_a_cpu_file_names_the_cpu_matmul(tmp_path, capsys):
    # It said "(fp16 on a GPU)" for every file before 2026-12-04.
    path = tmp_path / "2026-12-04-cpu-intel-xeon-2c-abc1234-smoke-mfu.json"
    path.write_text(json.dumps({"benchmark": "mfu", "recipe": "smoke", "runs": 1, "total_flops": 2e11,
                                "env": {"device": "cpu", "torch": "2.13.0+cpu", "commit": "abc1234"},
                                "time_s_mean": 2.0, "achieved_flops_per_s": 1e11, "matmul_flops_per_s": 1e12,
                                "mfu": 0.1, "matmul": "fp32 512^3 on the CPU"}))
    assert results_table.main([str(path)]) == 0
    row = capsys.readouterr().out
    assert "MFU 10.0%" in row and "dense matmul rate (fp32 512^3 on the CPU) of 1.0 TFLOP/s" in row


def test_breakdown_gives_each_kernels_bandwidth_and_share_of_the_step(tmp_path, capsys):
    """--breakdown: a row per layer and kernel; GB/s on the bytes the kernel must move (statistics
    1 access per element, apply and the backward sums 2, dx 3, in the element's size; none for
    the finalize), from the in-sequence time where the file has it; then each kernel's share of
    the recipe's step, every layer times its count."""
    mib = 2**20
    kernels = [{"kernel": "stats", "grid": [528, 1], "us": 10.0, "us_in_sequence": 16.0},
               {"kernel": "finalize", "grid": [1, 2], "us": 8.0, "us_in_sequence": 4.0},
               {"kernel": "apply", "grid": [528, 1], "us": 20.0, "us_in_sequence": 32.0},
               {"kernel": "bwd_reduce+finalize", "grid": [528, 1], "us": 30.0, "us_in_sequence": 32.0},
               {"kernel": "bwd_dx", "grid": [528, 1], "us": 40.0, "us_in_sequence": 48.0}]
    old = [{"kernel": "stats", "grid": [8, 1], "us": 2.0}]            # no in-sequence timing: the alone one
    layer = {"net": "cifar10-94", "count": 2, "shape": [1024, 64, 15, 15], "mbytes": 32e6 / mib,
             "variants": {"fused": {"kernels_us": kernels}}}
    small = {"net": "cifar10-94", "count": 1, "shape": [1024, 256, 3, 3], "mbytes": 1e6 / mib,
             "variants": {"fused": {"kernels_us": old}}}
    path = tmp_path / "2026-12-01-h200-abc1234-kernels.json"
    path.write_text(json.dumps({"copy_gbs": 4000.0, "layers": [layer, small]}))
    assert results_table.main(["--breakdown", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    rows = [line for line in out if line.startswith("| cifar10-94")]
    # 32 MB (32e6 bytes) moved once in 16 us = 2000 GB/s, half of the copy's 4000
    # (no instruction counts in this file: files before 2026-12-04 have none)
    assert rows[0] == "| cifar10-94 | 64@15 x2 | 30.5 | stats | 528x1 | 10.0 | 16.0 | 2000 | 50 | — | — |"
    assert rows[1] == "| cifar10-94 | 64@15 x2 | 30.5 | finalize | 1x2 | 8.0 | 4.0 | — | — | — | — |"
    assert rows[2].endswith("| apply | 528x1 | 20.0 | 32.0 | 2000 | 50 | — | — |")
    assert rows[3].endswith("| bwd_reduce+finalize | 528x1 | 30.0 | 32.0 | 2000 | 50 | — | — |")
    assert rows[4].endswith("| bwd_dx | 528x1 | 40.0 | 48.0 | 2000 | 50 | — | — |")
    assert rows[5] == "| cifar10-94 | 256@3 x1 | 1.0 | stats | 8x1 | 2.0 | — | 500 | 12 | — | — |"
    # the step: stats 2 x 16 + 2 = 34 us of 2 x 132 + 2 = 266
    assert out[-1] == ("cifar10-94, Triton kernels per training step (some timed alone only): stats 34.0 µs (13%), "
                       "finalize 8.0 µs (3%), apply 64.0 µs "
                       "(24%), bwd_reduce+finalize 64.0 µs (24%), bwd_dx 96.0 µs (36%); sum 266.0 µs")
    path.write_text(json.dumps({"copy_gbs": 4000.0, "layers": [layer]}))     # every kernel in sequence
    assert results_table.main(["--breakdown", str(path)]) == 0
    out = capsys.readouterr().out
    assert "Triton kernels per training step (in sequence): stats 32.0 µs (12%)" in out and "cut short" not in out
    # an interrupted run: the sums leave layers out, and the breakdown says so (it did not before 2026-12-04)
    path.write_text(json.dumps({"copy_gbs": 4000.0, "complete": False, "layers": [layer]}))
    assert results_table.main(["--breakdown", str(path)]) == 0
    assert "cut short: only the 1 layer(s) timed before the interrupt" in capsys.readouterr().out
    # With the kernels' instruction counts and the run's issue rate (GPU runs from 2026-12-04 on):
    # 1024 x 64 x 15 x 15 = 14.7456e6 elements x 20 instructions in 16 us at 3.6864e13
    # instructions/s is 50% of peak issue; a kernel without a row loop has no count.
    counted = [{**k, "instructions_per_element": 20.0} if k["kernel"] == "stats" else k for k in kernels]
    issue = {"sms": 144, "clock_mhz": 2000.0, "thread_instructions_per_s": 3.6864e13}
    path.write_text(json.dumps({"copy_gbs": 4000.0, "issue": issue,
                                "layers": [{**layer, "variants": {"fused": {"kernels_us": counted}}}]}))
    assert results_table.main(["--breakdown", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[3] == "| cifar10-94 | 64@15 x2 | 30.5 | stats | 528x1 | 10.0 | 16.0 | 2000 | 50 | 20.0 | 50 |"
    assert out[4].endswith("| finalize | 1x2 | 8.0 | 4.0 | — | — | — | — |")
    path.write_text(json.dumps({"copy_gbs": 4000.0, "layers": [{**layer, "variants": {"fused": {"kernels_us": counted}}}]}))
    assert results_table.main(["--breakdown", str(path)]) == 0       # counts without an issue rate
    assert capsys.readouterr().out.splitlines()[3].endswith("| 2000 | 50 | 20.0 | — |")
    # a kernels file without a breakdown (before 2026-12-02): one line, exit status 2
    path.write_text(json.dumps({"copy_gbs": 4000.0, "layers": [{**small, "variants": {"fused": {}}}]}))
    assert results_table.main(["--breakdown", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no layer has a kernel breakdown" in err[0]


def test_bad_files_are_one_line(tmp_path, capsys):
    odd = tmp_path / "results.json"
    odd.write_text("{}")
    broken = tmp_path / "2026-12-01-h100-abc1234-cifar10-94.json"
    broken.write_text('{"benchmark": "recipe"}')
    for path, message in ((odd, "name is not <date>-<device>-<commit>-<what>.json"),
                          (broken, "missing field 'summary'"), (tmp_path / "2026-12-01-x-abc1234-y.json", "No such file")):
        assert results_table.main([str(path)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err


def test_host_overhead_row_from_the_h100_file(capsys):
    # The first H100 run's file (commit 5d9fdd7), values as bench/host_overhead.py printed them.
    from pathlib import Path
    path = Path(__file__).parents[1] / "bench" / "results" / "2026-11-28-h100-80gb-hbm3-5d9fdd7-host-overhead.json"
    assert results_table.main([str(path)]) == 0
    row = capsys.readouterr().out.strip()
    assert row.startswith("| host cost per BN layer, forward + backward (`bench/host_overhead.py`) | NVIDIA H100 "
                          "80GB HBM3, torch 2.11.0+cu130, triton 3.6.0 | 2026-11-28 | 5d9fdd7 | 500 iterations | "
                          "fused eager 609.5 µs; fused compiled 769.7 µs; reference eager 199.4 µs; reference "
                          "compiled 108.1 µs |")


def test_host_overhead_row_with_the_launch_split(tmp_path, capsys):
    path = tmp_path / "2026-12-01-cpu-amd-epyc-2c-abc1234-host-overhead.json"
    path.write_text(json.dumps({
        "benchmark": "host_overhead", "env": {"device": "cpu", "torch": "2.13.0"}, "iters": 20,
        "kernels_stubbed": True, "rows": [{"variant": "fused, triton_op", "compiled": True, "us_per_layer": 12.34},
                                          {"variant": "fused", "compiled": True, "error": "RuntimeError: x"}],
        "launch_us": {"triton_apply_kernel": 30.04, "torch_empty": 4.44, "torch_add_": 5.0},
        "launch_note": "compiled launcher: TypeError: x", "impl_us": {"train_impl": 20.96, "backward_impl": 23.3}}))
    assert results_table.main([str(path)]) == 0
    assert capsys.readouterr().out.strip() == (
        "| host cost per BN layer, forward + backward (`bench/host_overhead.py`, Triton kernels stubbed) | cpu, "
        "torch 2.13.0 | 2026-12-01 | abc1234 | 20 iterations | fused, triton_op compiled 12.3 µs; fused compiled "
        "failed (RuntimeError: x); one call: triton_apply_kernel 30.0 µs, torch_empty 4.4 µs, torch_add_ 5.0 µs; "
        "the op's implementations, kernels stubbed: train_impl 21.0 µs, backward_impl 23.3 µs; "
        f"triton_compiled_launcher not timed (compiled launcher: TypeError: x) | `{path.as_posix()}` |")


def test_sweep_rows_old_and_confirmed(tmp_path, capsys):
    # The first H100 run's sweep (5d9fdd7) timed host launches and had no confirmation.
    from pathlib import Path
    old = Path(__file__).parents[1] / "bench" / "results" / "2026-11-28-h100-80gb-hbm3-5d9fdd7-kernel-sweep.json"
    default = {"tile": 2048, "warps": 4, "reverse": 0}
    best = {**default, "tile": 4096}
    new = tmp_path / "2026-12-03-h200-abc1234-kernel-sweep.json"
    new.write_text(json.dumps({
        "benchmark": "bn_act_sweep", "device": "NVIDIA H200", "torch": "2.11.0", "triton": "3.6.0",
        "nets": [["cifar10-94", 1024, []]], "graphs": True, "complete": False, "default": default,
        "not_timed": [{"stage": 5, "knobs": {"block_p": 512}}, {"stage": 5, "knobs": {"fuse_finalize": 1}}],
        "default_step_ms": 0.9, "configs": [{"tuning": default, "step_ms": 0.9}, {"tuning": best, "step_ms": 0.7},
                                            {"tuning": {**default, "warps": 8}, "error": "RuntimeError: x"}],
        "best": {"tuning": best, "step_ms": 0.7}, "best_speedup": 0.9 / 0.7,
        "confirm": [{"tuning": default, "step_ms": [0.9, 0.92], "mean_ms": 0.91},
                    {"tuning": best, "step_ms": [0.8, 0.82], "mean_ms": 0.81},
                    {"tuning": {**best, "reverse": 1}, "step_ms": [0.75, 0.77], "mean_ms": 0.76}],
        "confirmed_speedup": 0.91 / 0.81, "confirm_cache": "as in training"}))
    assert results_table.main([str(old), str(new)]) == 0
    rows = capsys.readouterr().out.strip().splitlines()
    assert rows[0].startswith(
        "| launch-knob sweep of the fused BN op (`bench/kernels.py --sweep`, cifar10-94, fashion-94) | NVIDIA H100 "
        "80GB HBM3, torch 2.11.0+cu130, triton 3.6.0 | 2026-11-28 | 5d9fdd7 | 18 configurations | BN fwd+bwd per "
        "training step launched from the host: defaults 10.806 ms; best `programs_per_sm=8` 9.260 ms = 1.17x "
        "(single timings) |")
    assert rows[1] == (
        "| launch-knob sweep of the fused BN op (`bench/kernels.py --sweep`, cifar10-94, cut short) | NVIDIA H200, "
        "torch 2.11.0, triton 3.6.0 | 2026-12-03 | abc1234 | 3 configurations (1 failed), 2 not timed (time budget; "
        "stages 5), then 3 of them x 2 | BN fwd+bwd per training step "
        "as CUDA graphs: defaults 0.900 ms; best `tile=4096` 0.700 ms = 1.29x (single timings); confirmed (2 rounds "
        "in turn, means, the L2 cache as in training): the defaults 0.910 ms, `tile=4096` 0.810 ms, `tile=4096,reverse=1` 0.760 ms; confirmed "
        f"speed-up of the best over the defaults 1.12x | `{new.as_posix()}` |")


def test_sweep_row_cut_short_before_the_defaults(tmp_path, capsys):
    path = tmp_path / "2026-12-03-h200-abc1234-kernel-sweep.json"
    path.write_text(json.dumps({
        "benchmark": "bn_act_sweep", "device": "NVIDIA H200", "torch": "2.11.0", "triton": "3.6.0",
        "nets": [["cifar10-94", 1024, []]], "graphs": True, "complete": False, "default": {"tile": 2048},
        "default_step_ms": None, "configs": [], "best": None, "best_speedup": None, "confirm": None}))
    assert results_table.main([str(path)]) == 0
    assert capsys.readouterr().out.strip() == (
        "| launch-knob sweep of the fused BN op (`bench/kernels.py --sweep`, cifar10-94, cut short) | NVIDIA H200, "
        "torch 2.11.0, triton 3.6.0 | 2026-12-03 | abc1234 | 0 configurations | BN fwd+bwd per training step as "
        f"CUDA graphs: defaults not timed | `{path.as_posix()}` |")


def test_readme_rows_are_what_results_table_makes_of_their_files(monkeypatch):
    """A README results row that names one file results_table formats must be its row, exactly:
    a row pasted before a format change (the 5d9fdd7 kernels row lacked 'launched from the host'
    until 2026-12-04) would otherwise tell an older story than the file."""
    import re
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(root)             # the rows name their files relative to the checkout
    checked = 0
    for line in (root / "README.md").read_text(encoding="utf-8").splitlines():
        m = re.match(r"^\|.*\| `(bench/results/[^`{},]+\.json)` \|$", line)
        if m and results_table.NAME.match(Path(m.group(1)).name):
            made = results_table.row(Path(m.group(1)))
            if made is not None:        # hand-written rows (loader, compile checks) have no format
                assert made == line, m.group(1)
                checked += 1
    assert checked >= 5
