"""The training loop and the time-to-accuracy timer.

    python -m fastres --recipe fashion-cpu            # one run, per-epoch table
    python -m fastres --target 0.94 --runs 25         # the fastest CIFAR-10 recipe, 25 seeds

Timing rules (anchors.md, the way airbench and the speedrun time themselves): inside the
timer are on-device data preparation (uint8 -> normalised channels-last), whitening init,
every training step, and the final TTA evaluation. Outside are disk I/O, the upload to the
device, model construction, the warm-up (reported separately) and the per-epoch
diagnostic evaluations. GPU time is measured with CUDA events, CPU time with perf_counter.

Loss convention: the loss is *summed* over the batch and SGD gets lr / batch_size and
weight_decay * batch_size (Myrtle.ai's convention). That is the same update as a mean loss
with (lr, weight_decay), but gradients stay large enough for fp16 without loss scaling.
Under `torchrun ... --parallel data` (distributed.py) each rank trains on its slice of every
global batch of cfg.batch_size images and the gradients are summed over the ranks: the same
summed-loss gradient, so the same lr / batch_size.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from . import augment as augment_mod
from . import distributed
from .config import Config
from .data import DeviceData, ImageSet, prepare
from .errors import FastresError
from .evaluate import accuracy, model_input, predict_logits
from .model import build_model, to_training_dtype
from .optim import NS_COEFFICIENTS, Muon


class Timer:
    """Sums the time of start()/stop() segments: CUDA events on GPU (no host sync until
    total()), perf_counter on CPU. The events go on the current stream of the training device,
    which need not be the current device (--device cuda:1): an event on another GPU's stream
    would time that idle GPU, i.e. only the host's launch time."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.device = device
        self.segments, self.seconds, self._t0 = [], 0.0, None

    def _event(self):
        event = torch.cuda.Event(enable_timing=True)
        event.record(torch.cuda.current_stream(self.device))
        return event

    def start(self):
        if self.cuda:
            self._t0 = self._event()
        else:
            self._t0 = time.perf_counter()

    def stop(self):
        if self.cuda:
            self.segments.append((self._t0, self._event()))
        else:
            self.seconds += time.perf_counter() - self._t0

    def total(self) -> float:
        """Seconds inside the timer so far (synchronises the training GPU)."""
        if self.cuda:
            torch.cuda.synchronize(self.device)
            self.seconds += sum(a.elapsed_time(b) for a, b in self.segments) / 1000
            self.segments = []
        return self.seconds


def lr_factor(cfg: Config, step: int, total_steps: int) -> float:
    """Per-step LR multiplier: linear (piecewise) or cosine (onecycle) rise from start_lr_frac
    to 1 over the first int(warmup_frac x total_steps) steps (airbench's count: step 109 of 476
    for cifar10-94; the epsilon keeps e.g. 0.3 x 10 from truncating to 2), then down towards
    final_lr_frac, reached at step total_steps: as in airbench, the last step taken (total_steps - 1)
    still has final + (1 - final) / (total_steps - peak). With decay_end_frac < 1 the decay ends
    at step int(decay_end_frac x total_steps) and final_lr_frac holds from there on (Myrtle.ai's
    ResNet-9: 0 -> 1 at epoch 2 -> 0.1 at epoch 8 of 10, then 0.1)."""
    if cfg.schedule == "constant":
        return 1.0
    peak = int(cfg.warmup_frac * total_steps + 1e-6)
    end = total_steps if cfg.decay_end_frac >= 1 else int(cfg.decay_end_frac * total_steps + 1e-6)
    if step < peak:
        a, b, frac = cfg.start_lr_frac, 1.0, step / peak
    elif step >= end:
        return cfg.final_lr_frac
    else:
        a, b, frac = 1.0, cfg.final_lr_frac, (step - peak) / max(end - peak, 1)
    if cfg.schedule == "onecycle":
        frac = (1 - math.cos(math.pi * frac)) / 2
    return a + (b - a) * frac


def steps_in(epochs: float, steps_per_epoch: int) -> int:
    """Optimiser steps in `epochs` epochs, counted as airbench does: ceil(epochs x steps per
    epoch) (476 for 9.9 epochs of 48), for the run and for the whitening bias. The epsilon keeps
    a whole number of epochs from rounding up through float error."""
    return math.ceil(epochs * steps_per_epoch - 1e-6)


def whiten_bias_factor(cfg: Config, step: int, whiten_bias_steps: int, factor: float) -> float:
    """LR multiplier of the whitening bias: the run's `factor` (schedule "global"), or linear
    from 1 down to 0 at the step where the bias freezes ("linear", airbench94_muon)."""
    if cfg.whiten_bias_schedule == "global":
        return factor
    return max(0.0, 1 - step / max(whiten_bias_steps, 1))


def param_groups(model: torch.nn.Module, cfg: Config, exclude=()) -> list[dict]:
    """Weights (conv/linear, ndim > 1) and the rest (biases, BN parameters) in their own group
    with scaled LR and weight decay (Myrtle: bias LR x64, decay / 64 with frozen BN scales).
    The whitening layer's bias gets a third group, flagged "whiten_bias", with the weights' LR
    and decay as in airbench94 (it sees every pixel of the input, and x64 would make it the
    fastest-moving parameter of the net), or the biases' with whiten_bias_group="biases" as in
    airbench94_muon; its schedule is chosen by whiten_bias_schedule. The 'base_lr' key holds
    the peak LR the schedule multiplies. `exclude`: parameters another optimiser owns."""
    whiten = getattr(unwrap(model), "whiten", None)
    plain = {id(p) for p in whiten.parameters()} if whiten is not None else set()
    skip = {id(p) for p in exclude}
    trainable = [p for p in model.parameters() if p.requires_grad and id(p) not in skip]
    b = cfg.batch_size
    weights = {"base_lr": cfg.lr / b, "weight_decay": cfg.weight_decay * b}
    biases = {"base_lr": cfg.lr * cfg.bias_lr_scale / b,
              "weight_decay": cfg.weight_decay * cfg.bias_decay_scale * b}
    groups = [{"params": [p for p in trainable if p.ndim > 1], **weights},
              {"params": [p for p in trainable if p.ndim <= 1 and id(p) not in plain], **biases}]
    whiten_bias = [p for p in trainable if p.ndim <= 1 and id(p) in plain]
    if whiten_bias:
        groups.append({"params": whiten_bias, "whiten_bias": True,
                       **(biases if cfg.whiten_bias_group == "biases" else weights)})
    return groups


def make_optimizers(model: torch.nn.Module, cfg: Config) -> list[torch.optim.Optimizer]:
    """Nesterov SGD for everything, or (optimizer="muon") Muon for the conv filters and SGD for
    the head, biases and BN parameters, as in airbench's Muon variant. Muon's update is
    normalised, so its LR does not depend on the batch size or the loss scale."""
    filters = [p for p in model.parameters() if p.requires_grad and p.ndim == 4] if cfg.optimizer == "muon" else []
    # Nesterov with momentum 0 is plain SGD (the same update), but torch's SGD refuses the pair:
    # --momentum 0 must not need --no-nesterov as well.
    optimizers = [torch.optim.SGD(param_groups(model, cfg, exclude=filters), lr=0.0, momentum=cfg.momentum,
                                  nesterov=cfg.nesterov and cfg.momentum > 0)]
    if filters:
        muon = Muon(filters, lr=0.0, momentum=cfg.muon_momentum, nesterov=True,
                    ns_dtype=torch.bfloat16 if filters[0].is_cuda else torch.float32,
                    norm_every=cfg.muon_norm_every, ns_coefficients=NS_COEFFICIENTS[cfg.muon_ns])
        muon.param_groups[0]["base_lr"] = cfg.muon_lr
        optimizers.append(muon)
    return optimizers


class WeightAverage:
    """EMA of all floating-point parameters and buffers (BN running statistics included), updated
    by the loop every cfg.ema_every steps. With lookahead the live weights are reset to the
    average at each update."""

    def __init__(self, model: torch.nn.Module, decay: float, lookahead: bool):
        self.decay, self.lookahead = decay, lookahead
        self.live = [t for t in model.state_dict().values() if t.is_floating_point()]
        self.avg = [t.detach().clone() for t in self.live]

    @torch.no_grad()
    def update(self, decay: float | None = None):
        torch._foreach_lerp_(self.avg, self.live, 1 - (self.decay if decay is None else decay))
        if self.lookahead:
            torch._foreach_copy_(self.live, self.avg)

    @torch.no_grad()
    def swap(self):
        """Exchange live and averaged weights (call twice to undo)."""
        for live, avg in zip(self.live, self.avg):
            tmp = live.clone()
            live.copy_(avg)
            avg.copy_(tmp)


@dataclass
class RunResult:
    seed: int
    accuracy: float                   # final test accuracy with TTA (inside the timer)
    time_s: float                     # time-to-accuracy: everything inside the timer
    val_accuracy: float | None = None  # with TTA, when a validation split is held out
    steps: int = 0
    epochs: list = field(default_factory=list)  # per-epoch diagnostics


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module behind a torch.compile wrapper (its state_dict keys are the plain ones)."""
    return getattr(model, "_orig_mod", model)


def training_dtype(device: torch.device) -> torch.dtype:
    return torch.float16 if device.type == "cuda" else torch.float32


def new_model(cfg: Config, ds: ImageSet) -> torch.nn.Module:
    """The recipe's model, randomly initialised from the current torch seed, in the
    training dtype and channels-last."""
    _, h, w, c = ds.train_x.shape
    model = build_model(cfg, in_channels=c, num_classes=ds.num_classes, image_size=min(h, w))
    return to_training_dtype(model.to(ds.train_x.device), training_dtype(ds.train_x.device))


class TrainStep(torch.nn.Module):
    """Forward, loss and number correct of one batch. Compiled, this is one graph from the
    input to the loss, and AOTAutograd compiles its backward as one graph too: the fp32 cast,
    the label-smoothed cross-entropy and the argmax fuse with the last layers."""

    def __init__(self, model: torch.nn.Module, label_smoothing: float):
        super().__init__()
        self.model, self.label_smoothing = model, label_smoothing

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.model(model_input(x)).float()
        loss = F.cross_entropy(logits, y, label_smoothing=self.label_smoothing, reduction="sum")
        return loss, (logits.argmax(1) == y).sum()


@dataclass
class Nets:
    """One set of weights and the two ways a run calls it: `model` for evaluation and `step`
    (a TrainStep) for training, each compiled or not. `net` is the plain module (state_dict)."""
    net: torch.nn.Module
    model: torch.nn.Module
    step: torch.nn.Module


def build_nets(cfg: Config, ds: ImageSet, backend: str = "inductor") -> Nets:
    """The recipe's model (initialised from the current torch seed) and its train step,
    compiled with cfg.compile_mode when cfg.compile. Reused by every run of a config."""
    net = new_model(cfg, ds)
    step = TrainStep(net, cfg.label_smoothing)
    if not cfg.compile:
        return Nets(net, net, step)
    options = {"backend": backend}
    if backend == "inductor" and cfg.compile_mode != "default":
        options["mode"] = cfg.compile_mode
    return Nets(net, torch.compile(net, **options), torch.compile(step, **options))


def warm_up(nets: Nets, cfg: Config, ds: ImageSet) -> float:
    """Run the (compiled) step and model through every call a run makes, outside the timer, on the
    run's own data layout so torch.compile's guards (shapes, strides, grad mode, requires_grad)
    match: training steps (with the optimisers and weight average) on random labels with the
    whitening bias trainable and frozen, the diagnostic evaluation and the final (selective)
    TTA evaluation (on CPU without compile, of one evaluation batch). Then restore the weights.
    Returns the seconds spent."""
    t0 = time.perf_counter()
    model = nets.net
    saved = copy.deepcopy(model.state_dict())
    device = ds.train_x.device
    data = prepare(ds, training_dtype(device), cfg.val_split)
    batch = cfg.batch_size // distributed.data_shard(cfg)[1]     # per rank under --parallel data
    x = model_input(data.train_x[:batch])
    y = torch.randint(0, ds.num_classes, (batch,), device=device)
    whiten = getattr(model, "whiten", None)
    # Building the first optimiser imports torch._dynamo (over a second on a CPU): do it here.
    optimizers = make_optimizers(model, cfg)
    average = WeightAverage(model, cfg.ema_decay, cfg.lookahead) if cfg.ema_decay > 0 else None
    for bias_trainable in ((True, False) if whiten is not None and whiten.bias is not None else (None,)):
        if bias_trainable is not None:           # guards check requires_grad, in eval mode too
            whiten.bias.requires_grad_(bias_trainable)
        for _ in range(2):
            nets.step(x, y)[0].backward()
            for opt in optimizers:
                opt.step()
            model.zero_grad(set_to_none=True)
            if average is not None:
                average.update()
        for x_eval in (data.val_x, data.test_x):
            if x_eval is not None:
                if device.type == "cpu" and not cfg.compile:   # no guards, no autotuning: one batch
                    x_eval = x_eval[:cfg.eval_batch_size]     # touches every path (minutes saved)
                predict_logits(nets.model, x_eval, 0, cfg.eval_batch_size)
                predict_logits(nets.model, x_eval, cfg.tta, cfg.eval_batch_size, cfg.tta_fraction)
    model.load_state_dict(saved)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def train(cfg: Config, ds: ImageSet, nets: Nets | None = None, on_epoch=None) -> RunResult:
    """One training run of `cfg` on `ds` (uint8 tensors already on the training device).

    nets: the (possibly compiled) model and train step to reuse across runs (build_nets); the
    weights are re-initialised here from a fresh model built with this run's seed.
    on_epoch(dict) receives per-epoch diagnostics."""
    device = ds.train_x.device
    torch.manual_seed(cfg.seed)
    fresh = new_model(cfg, ds)
    if nets is None:
        nets = Nets(fresh, fresh, TrainStep(fresh, cfg.label_smoothing))
    else:
        nets.net.load_state_dict(fresh.state_dict())
        if unwrap(nets.step).label_smoothing != cfg.label_smoothing:
            raise ValueError("nets were built for another label_smoothing: build_nets(cfg, ds) again")
    model = nets.net
    gen = torch.Generator(device).manual_seed(cfg.seed)   # same draws on every rank
    timer = Timer(device)
    rank, world = distributed.data_shard(cfg)   # (0, 1) unless --parallel data under torchrun
    batch = cfg.batch_size // world             # this rank's slice of every (global) batch
    if world > 1:
        distributed.barrier()                   # the ranks start the clock together

    timer.start()  # ------------------------------------------------------------ timed
    data: DeviceData = prepare(ds, training_dtype(device), cfg.val_split)
    n = data.train_x.shape[0]
    if cfg.batch_size > n:
        raise FastresError(f"--batch-size {cfg.batch_size} is larger than the training set ({n} images)")
    model.init_whitening(data.train_x)
    whiten = model.whiten
    if whiten is not None and whiten.bias is not None:
        whiten.bias.requires_grad_(True)
    optimizers = make_optimizers(model, cfg)
    groups = [g for opt in optimizers for g in opt.param_groups]
    average = WeightAverage(model, cfg.ema_decay, cfg.lookahead) if cfg.ema_decay > 0 else None
    augment = augment_mod.from_config(cfg, n, gen)
    steps_per_epoch = n // cfg.batch_size
    total_steps = max(1, steps_in(cfg.epochs, steps_per_epoch))
    losses = torch.zeros(total_steps, device=device)        # per-step summed loss, read once per epoch
    correct = torch.zeros(total_steps, device=device)
    whiten_bias_steps = steps_in(cfg.whiten_bias_epochs, steps_per_epoch)
    step, epoch, epochs_log = 0, 0, []
    while step < total_steps:
        # The whole epoch augmented and shuffled at once (bulk random draws); batches are slices.
        perm = torch.randperm(n, generator=gen, device=device)
        if world > 1:                               # only this rank's slice of each global batch
            perm = distributed.shard_order(perm, steps_per_epoch, cfg.batch_size, rank, world)
        x_epoch = augment(data.train_x, epoch, order=perm)  # (N, C, H, W); (steps * B/world, ...) per rank
        y_epoch = data.train_y[perm]
        first = step
        for start in range(0, min(steps_per_epoch, total_steps - step) * batch, batch):
            if step == whiten_bias_steps and whiten is not None and whiten.bias is not None:
                whiten.bias.requires_grad_(False)           # airbench: freeze after ~3 epochs
            factor = lr_factor(cfg, step, total_steps)
            whiten_factor = whiten_bias_factor(cfg, step, whiten_bias_steps, factor)
            for g in groups:
                g["lr"] = g["base_lr"] * (whiten_factor if g.get("whiten_bias") else factor)
            loss, n_correct = nets.step(x_epoch[start:start + batch], y_epoch[start:start + batch])
            loss.backward()
            if world > 1:   # summed over ranks = the summed-loss gradient of the global batch
                distributed.all_reduce_grads(model.parameters())
            for opt in optimizers:
                opt.step()
            model.zero_grad(set_to_none=True)
            losses[step] = loss.detach()
            correct[step] = n_correct
            step += 1
            if average is not None and step % cfg.ema_every == 0:
                # airbench's lookahead: decay x (t/T)^3, so early steps are barely averaged
                average.update(cfg.ema_decay * (step / total_steps) ** cfg.ema_ramp_power)
        epoch += 1
        last = step == total_steps
        if not (last or (cfg.eval_every and epoch % cfg.eval_every == 0)):
            continue
        timer.stop()  # ------------------------------------------- diagnostics, untimed
        if world > 1:
            distributed.sum_over_ranks_(losses[first:step], correct[first:step])
        check_finite(losses[first:step], first, cfg, total_steps)
        row = {"epoch": epoch, "train_loss": float(losses[first:step].sum()) / ((step - first) * cfg.batch_size),
               "train_acc": float(correct[first:step].sum()) / ((step - first) * cfg.batch_size),
               "time_s": timer.total(), "eval_acc": None}
        if not last:
            x_eval, y_eval = (data.val_x, data.val_y) if data.val_x is not None else (data.test_x, data.test_y)
            with averaged(average):
                row["eval_acc"] = float(accuracy(predict_logits(nets.model, x_eval, 0, cfg.eval_batch_size), y_eval))
            epochs_log.append(row)
            if on_epoch:
                on_epoch(row)
        timer.start()  # ----------------------------------------------------- timed
    if average is not None and cfg.lookahead:
        average.update(1.0)            # airbench: the final weights are the lookahead average
    elif average is not None:
        average.swap()                 # evaluate (and keep) the EMA weights
    test_acc = accuracy(predict_logits(nets.model, data.test_x, cfg.tta, cfg.eval_batch_size, cfg.tta_fraction),
                        data.test_y)
    timer.stop()  # ---------------------------------------------------------- untimed
    time_s = timer.total() if world == 1 else distributed.max_over_ranks(timer.total())
    result = RunResult(cfg.seed, float(test_acc), time_s, steps=step, epochs=epochs_log)
    if data.val_x is not None:
        val_logits = predict_logits(nets.model, data.val_x, cfg.tta, cfg.eval_batch_size, cfg.tta_fraction)
        result.val_accuracy = float(accuracy(val_logits, data.val_y))
    row.update(eval_acc=result.val_accuracy, tta_acc=result.accuracy, time_s=result.time_s)
    epochs_log.append(row)
    if on_epoch:
        on_epoch(row)
    return result


class averaged:
    """Context manager: evaluate with the averaged weights when an EMA is kept."""

    def __init__(self, average: WeightAverage | None):
        self.average = average if average is not None and not average.lookahead else None

    def __enter__(self):
        if self.average:
            self.average.swap()

    def __exit__(self, *exc):
        if self.average:
            self.average.swap()


def check_finite(losses: torch.Tensor, first_step: int, cfg: Config, total_steps: int):
    """Stop on a NaN/inf loss, naming the first bad step and its LR (checked once per epoch so
    no host sync happens inside an epoch)."""
    bad = (~torch.isfinite(losses)).nonzero()
    if len(bad):
        s = first_step + int(bad[0])
        lr = cfg.lr * lr_factor(cfg, s, total_steps)
        raise FastresError(f"loss became {float(losses[int(bad[0])])} at step {s} (lr {lr:.4g}); "
                           f"try a lower --lr")
