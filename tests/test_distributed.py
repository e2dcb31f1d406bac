"""torchrun on CPU (gloo): a data-parallel run equals one process on the same global batches, runs
spread over 2 ranks equal the same runs in one process, sharding helpers, one-line errors.

The two torchrun launches start 2 real processes each (OMP_NUM_THREADS=1, width 0.125, 2 epochs
of 256 images), a few seconds apiece. Run as a script, this file is the torchrun worker of the
data-parallel test: `python -m torch.distributed.run ... tests/test_distributed.py FLAGS`."""
import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from fastres import cli, model as model_mod
from fastres.config import Config
from fastres.distributed import World, check_data_batch, resolve_mode, shard_order
from fastres.errors import FastresError
from fastres.train import new_model
from helpers import pattern_set, write_npz

FLAGS = ["--epochs", "2", "--batch-size", "64", "--width", "0.125", "--device", "cpu", "--crop-pad", "1",
         "--flip", "random", "--eval-batch-size", "128", "--threads", "1", "--target", "0.3"]


class FixedStatsNormAct(torch.nn.BatchNorm2d):
    """Norm + ReLU with fixed statistics (the initial running ones): no batch statistics, so an
    image's activations do not depend on which images share its batch or its rank. (Per-rank BN
    equals ghost BN mathematically, but its rounding differs and ResNet-9's max-pools then route
    some gradients differently, so weights can only be compared exactly without batch stats.)"""

    def forward(self, x):
        return F.relu(F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0,
                                   self.eps))


def without_batch_stats(cfg, act=None):
    return FixedStatsNormAct


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return str(write_npz(tmp_path_factory.mktemp("dist") / "tiny.npz", n_train=256, n_test=128))


@pytest.fixture
def keep_threads():
    n = torch.get_num_threads()       # --threads 1 in the in-process reference runs
    yield
    torch.set_num_threads(n)


def torchrun(target: list[str], args, cwd):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           *target, *args], capture_output=True, text=True, timeout=180, cwd=cwd, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def records(out_dir, kind):
    lines = (out_dir / "runs.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["type"] == kind]


def without_times(run: dict) -> dict:
    return {**run, "time_s": None, "epochs": [{**row, "time_s": None} for row in run["epochs"]]}


def test_data_parallel_equals_one_process_on_the_same_global_batches(data, tmp_path, keep_threads, monkeypatch):
    flags = ["--dataset", data, *FLAGS, "--lr", "1.0", "--save"]
    stdout = torchrun([__file__], [*flags, "--parallel", "data", "--output", "dp"], tmp_path)
    assert stdout.count("1 run(s): accuracy") == 1                           # rank 0 alone prints
    # One process on the same global batches of 64: crop and flip stay on, since every rank
    # draws the epoch's randoms from the same seed and augments only its slice.
    monkeypatch.setattr(model_mod, "default_norm_act", without_batch_stats)
    assert cli.main([*flags, "--output", str(tmp_path / "one")]) == 0
    dp = torch.load(tmp_path / "dp" / "weights-seed0.pt", weights_only=True)
    one = torch.load(tmp_path / "one" / "weights-seed0.pt", weights_only=True)
    torch.manual_seed(0)
    start = new_model(Config(width=0.125, act="relu"), pattern_set(8, 8)).state_dict()
    params = [k for k in dp if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert len(params) > 10
    for k in params:
        torch.testing.assert_close(dp[k], one[k], rtol=1e-4, atol=1e-5, msg=k)
    # ...and the weights did move: averaging the gradients (or any lost shard) would show.
    assert min(float((dp[k] - start[k]).abs().max()) for k in params if k.endswith("0.weight")) > 1e-3
    (run,), (ref,) = records(tmp_path / "dp", "run"), records(tmp_path / "one", "run")
    assert run["steps"] == ref["steps"] == 2 * (256 // 64)
    for row, ref_row in zip(run["epochs"], ref["epochs"]):                   # losses summed over ranks
        assert row["train_loss"] == pytest.approx(ref_row["train_loss"], rel=1e-4)
        assert row["train_acc"] == ref_row["train_acc"]
    assert records(tmp_path / "dp", "start")[0]["world_size"] == 2


def test_runs_over_two_ranks_equal_the_same_runs_in_one_process(data, tmp_path, keep_threads):
    stdout = torchrun(["-m", "fastres"], ["--dataset", data, *FLAGS, "--runs", "4", "--output", "spread"], tmp_path)
    assert stdout.count("4 run(s): accuracy") == 1 and stdout.count("recipe ") == 1
    assert cli.main(["--dataset", data, *FLAGS, "--runs", "4", "--output", str(tmp_path / "one")]) == 0
    spread, one = records(tmp_path / "spread", "run"), records(tmp_path / "one", "run")
    assert [r["seed"] for r in spread] == [0, 1, 2, 3]
    assert [without_times(r) for r in spread] == [without_times(r) for r in one]
    assert len({r["accuracy"] for r in one} | {r["epochs"][0]["train_loss"] for r in one}) > 2  # seeds differ
    epochs = records(tmp_path / "spread", "epoch")
    assert [(e["seed"], e["epoch"]) for e in epochs] == [(s, e) for s in range(4) for e in (1, 2)]
    assert records(tmp_path / "spread", "start")[0]["config"]["parallel"] == "runs"


def test_shard_order_gives_each_rank_its_slice_of_every_global_batch():
    perm = torch.randperm(70, generator=torch.Generator().manual_seed(0))
    steps, batch, world = 70 // 16, 16, 4
    shards = [shard_order(perm, steps, batch, r, world) for r in range(world)]
    assert all(s.shape == (steps * 4,) for s in shards)
    for step in range(steps):        # global batch `step` = the ranks' step-th blocks, in rank order
        together = torch.cat([s[step * 4:(step + 1) * 4] for s in shards])
        assert torch.equal(together, perm[step * batch:(step + 1) * batch])
    covered = torch.cat(shards)
    assert len(set(covered.tolist())) == steps * batch            # no image twice, whole epoch


def test_rounds_cover_every_seed_once_and_gather_restores_order():
    seeds = [10, 11, 12, 13, 14]
    parts = [World(rank=r, size=2, mode="runs").rounds(seeds) for r in range(2)]
    assert parts == [[[(0, 10)], [(2, 12)], [(4, 14)]], [[(1, 11)], [(3, 13)], []]]   # as many rounds
    assert World(rank=1, size=2, mode="data").rounds(seeds) == [[pair] for pair in enumerate(seeds)]
    assert World().gather([(1, "b"), (0, "a")]) == ["a", "b"]
    assert resolve_mode("auto", 4) == "runs" and resolve_mode("auto", 1) == "data"
    assert check_data_batch(512, 8) == 64


def test_parallel_flags_are_validated():
    with pytest.raises(FastresError, match="--parallel must be one of"):
        Config(parallel="gpus").validate()
    with pytest.raises(FastresError, match="--dist-backend must be one of"):
        Config(dist_backend="mpi").validate()


def test_rank_device_refuses_what_it_cannot_give(monkeypatch):
    from fastres.distributed import rank_device
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert rank_device("auto", 3) == torch.device("cpu") and rank_device("cpu", 1) == torch.device("cpu")
    for name, message in (("cuda", "CUDA is not available"), ("cuda:1", "CUDA is not available"),
                          ("tpu0", "unknown --device")):
        with pytest.raises(FastresError, match=message):
            rank_device(name, 0)


@pytest.mark.parametrize("flags, world, message", [
    (["--batch-size", "2", "--parallel", "data"], "4", "world size 4 is larger than --batch-size 2"),
    (["--batch-size", "6", "--parallel", "data"], "4", "--batch-size 6 (global) must be a multiple of the world size 4"),
    (["--dist-backend", "nccl"], "2", "--dist-backend nccl needs CUDA GPUs"),
    (["--device", "tpu0"], "2", "unknown --device 'tpu0'"),
])
def test_errors_under_torchrun_are_one_line_before_any_rendezvous(flags, world, message, data, monkeypatch, capsys):
    for name, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", world)):
        monkeypatch.setenv(name, value)       # torchrun's variables; no other process ever joins
    code = cli.main(["--dataset", data, "--device", "cpu", "--width", "0.125", *flags])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err


def test_a_run_diverging_on_one_rank_is_recorded_and_the_study_goes_on(data, tmp_path, monkeypatch):
    """Runs spread over 2 ranks: seed 1 of row a (rank 1) diverges for real (its LR raised to 1e12
    by the worker below). Every rank must then stop row a alike, with rank 0's finished seed 0
    recorded, and go on to row b. (Before, rank 1 alone went on: its next collective met rank 0's
    gather of row a, which mixed rows or hung.)"""
    base = {"dataset": data, "epochs": 2, "batch_size": 64, "width": 0.125, "device": "cpu", "crop_pad": 1,
            "flip": "random", "eval_batch_size": 128, "threads": 1, "target": 0.3, "lr": 0.4}
    spec = {"name": "spread", "base": base, "rows": [{"name": "a"}, {"name": "b", "changes": {"lr": 0.5}}]}
    (tmp_path / "spread.json").write_text(json.dumps(spec))
    monkeypatch.setenv("FASTRES_TEST_DIVERGE", "1")       # the workers' switch (below)
    stdout = torchrun([__file__], ["study", "--file", "spread.json", "--runs", "4", "--output", "out"], tmp_path)
    assert stdout.count("a: diverged at seed 1 (loss became nan") == 1, stdout
    lines = (tmp_path / "out" / "study-spread.jsonl").read_text().splitlines()
    recs = [(r["row"], r["seed"], "diverged" if r.get("diverged") else "run") for r in map(json.loads, lines)]
    assert recs == [("a", 0, "run"), ("a", 1, "diverged")] + [("b", s, "run") for s in range(4)]
    table = (tmp_path / "out" / "study-spread.md").read_text()
    assert "| a | — | 2 | diverged (seed 1) |" in table and "| b | lr=0.5 | 4 |" in table, table


if __name__ == "__main__":          # the torchrun worker of the tests above
    if os.environ.get("FASTRES_TEST_DIVERGE"):          # a real NaN loss at seed 1 of lr 0.4's row
        from fastres import runner
        real_train = runner.train
        runner.train = lambda cfg, *args: real_train(
            cfg.replace(lr=1e12) if (cfg.seed, cfg.lr) == (1, 0.4) else cfg, *args)
    else:                           # the data-parallel test
        model_mod.default_norm_act = without_batch_stats
    sys.exit(cli.main(sys.argv[1:]))
