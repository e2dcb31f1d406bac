"""The one typed configuration of a training run, and the named recipes built from it.

Every CLI flag of `python -m fastres train` is derived from a field of Config (cli.py), so this
file is the single source of truth for what can be set. A recipe is a Config instance with a
name; `--target T` picks the fastest recipe registered for the dataset whose declared target
is >= T. Units are in the names where they matter.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import math
import typing
from dataclasses import dataclass
from pathlib import Path

from .errors import FastresError


# Number of stage widths each arch takes from --widths (model.py lists their default widths).
STAGES = {"resnet9": 4, "airbench": 3, "airbench96": 3, "resnet18": 4, "myrtle-ladder": 4}


@dataclass
class Config:
    # --- what to train ------------------------------------------------------------------
    dataset: str = "cifar10"        # cifar10 | fashion-mnist | PATH.npz
    target: float = 0.94            # test accuracy the recipe is declared to reach (mean of runs)
    # --- model (model.py) ----------------------------------------------------------------
    arch: str = "resnet9"           # resnet9 (Myrtle.ai) | airbench | airbench96 | resnet18 (D2L layout) | myrtle-ladder
    width: float = 1.0              # channel multiplier on the architecture's widths
    widths: str = ""                # the stages' base widths, comma-separated (airbench95: 128,384,384); empty = the arch's own
    act: str = "celu"               # identity | relu | celu | gelu | silu
    whiten_act: str = ""            # airbench: the activation after the whitening conv (empty = --act)
    celu_alpha: float = 0.3         # CELU alpha (Myrtle: 0.075, later 0.3 with frozen BN scales)
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1        # PyTorch convention: running = (1-m)*running + m*batch
    bn_freeze_scale: bool = False   # BN scales fixed at 1 (only biases train)
    ghost_batch: int = 0            # images per BN statistics group (0 = whole batch)
    logit_scale: float = 0.125      # logits multiplied by this (Myrtle: 0.125)
    whiten: bool = False            # patch-whitening first conv, initialised from training data
    prep_kernel: int = 3            # resnet9: the prep conv's kernel, 3 or 1 (Myrtle's final net: 1x1 after the whitening)
    whiten_bias_epochs: float = 3.0  # airbench: whitening bias trains this long, then frozen
    whiten_bias_group: str = "weights"  # the whitening bias's LR and decay: weights (airbench94) | biases (x bias scales)
    whiten_bias_schedule: str = "global"  # global (the run's schedule) | linear (1 -> 0 over whiten_bias_epochs)
    fused_bn: bool = True           # use the Triton fused BN+act kernel where it is available
    # --- data and augmentation (data.py, augment.py) -------------------------------------
    val_split: int = 0              # hold out this many training images as a validation set
    crop_pad: int = 4               # random translate by up to this many px (reflect padding)
    flip: str = "random"            # none | random | alternating
    cutout: int = 0                 # side of the square cut out of each image (0 = off)
    cutout_inside: bool = True      # the square lies inside the image (Myrtle.ai, airbench96); off: centre anywhere, clipped
    erase_p: float = 0.0            # random-erasing probability per image (0 = off)
    erase_area: tuple = (0.02, 0.33)   # erased fraction of the image area (min, max)
    erase_ratio: tuple = (0.3, 3.3)    # aspect ratio of the erased box (min, max)
    brightness: float = 0.0         # add U(-b, b) to each normalised image (0 = off)
    contrast: float = 0.0           # then multiply it by U(1 - c, 1 + c) (0 = off)
    # --- optimisation (train.py) ---------------------------------------------------------
    epochs: float = 10.0
    batch_size: int = 512
    lr: float = 0.4                 # peak learning rate (loss averaged over the batch)
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4      # for conv/linear weights
    bias_lr_scale: float = 1.0      # LR multiplier of biases and BN parameters (Myrtle: 64)
    bias_decay_scale: float = 1.0   # weight-decay multiplier of biases and BN parameters (1/64)
    label_smoothing: float = 0.0
    schedule: str = "piecewise"     # piecewise | onecycle | constant
    warmup_frac: float = 0.2        # fraction of steps spent rising to the peak LR
    start_lr_frac: float = 0.0      # LR at step 0, as a fraction of the peak
    final_lr_frac: float = 0.0      # LR at the last step, as a fraction of the peak
    decay_end_frac: float = 1.0     # fraction of steps at which the LR reaches final_lr_frac, then held
    ema_decay: float = 0.0          # EMA of weights, decay per update (0 = off)
    ema_every: int = 5              # steps between EMA updates
    lookahead: bool = False         # reset weights to the EMA at each EMA update
    ema_ramp_power: float = 0.0     # EMA decay x progress^power (airbench lookahead: 3; 0 = constant)
    optimizer: str = "sgd"          # sgd | muon (Muon for conv filters, Nesterov SGD for the rest)
    muon_lr: float = 0.24           # Muon's peak LR (follows the same schedule)
    muon_momentum: float = 0.6
    muon_norm_every: int = 1        # rescale the filters to norm sqrt(out channels) every N Muon steps
    muon_ns: str = "airbench"       # Newton-Schulz coefficients: airbench | speedrun (the 2025 record's)
    # --- evaluation (evaluate.py) --------------------------------------------------------
    tta: int = 1                    # 0 none, 1 mirror, 2 mirror x {0, up-left 1px, down-right 1px}
    tta_fraction: float = 1.0       # selective TTA: full TTA only for this fraction of least confident images
    eval_batch_size: int = 1000
    eval_every: int = 1             # diagnostic test eval every N epochs (outside the timer; 0 = off)
    # --- running -------------------------------------------------------------------------
    seed: int = 0
    runs: int = 1
    device: str = "auto"            # auto | cpu | cuda | cuda:N
    parallel: str = "auto"          # under torchrun: auto | data (one run over all ranks) | runs (seeds split) | none
    dist_backend: str = "auto"      # torch.distributed backend: auto (nccl on GPU, gloo on CPU) | nccl | gloo
    compile: bool = False           # torch.compile the model (GPU recipes)
    compile_mode: str = "default"   # torch.compile mode: default | reduce-overhead | max-autotune | max-autotune-no-cudagraphs
    deterministic: bool = False     # torch deterministic algorithms (slower on GPU)
    threads: int = 0                # CPU threads for torch (0 = torch's default)
    data_dir: str = ""              # where datasets are looked for first
    download: bool = True           # download a missing dataset (CIFAR-10 / Fashion-MNIST)
    output: str = ""                # directory for the JSONL log, plots and weights
    plot: bool = False              # write an accuracy-vs-time PNG (needs matplotlib)
    save: bool = False              # save final weights (plain tensors, weights_only loadable)
    train_subset: int = 0           # use only the first N training images (0 = all; for tests)
    test_subset: int = 0            # use only the first N test images (0 = all; for tests)
    # --- backbone study (study.py; model.py's myrtle-ladder) -----------------------------
    ladder_step: int = 7            # myrtle-ladder arch: step 1..7 of Myrtle.ai's backbone study
    bn_scale_init: str = "one"      # one | uniform (BN scales U[0,1], PyTorch <= 0.4's default)

    def replace(self, **changes) -> "Config":
        return dataclasses.replace(self, **changes)

    def validate(self, train_size: int | None = None, image_size: int | None = None) -> None:
        """Raise FastresError (one clear line) for values no run could use (train_size and
        image_size, when given, are the dataset's training-image count and side in pixels)."""
        def bad(msg):
            raise FastresError(msg)
        hints = typing.get_type_hints(Config)
        for f in dataclasses.fields(self):      # a study file or --set can give any JSON value
            value, kind, flag = getattr(self, f.name), hints[f.name], "--" + f.name.replace("_", "-")
            if kind is tuple:
                if not (isinstance(value, tuple) and len(value) == 2
                        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
                    bad(f"{flag} must be two numbers MIN MAX, got {value!r}")
            elif not (type(value) is kind or (kind is float and type(value) is int)):
                bad(f"{flag} must be of type {kind.__name__}, got {value!r}")
            for v in (value if kind is tuple else (value,)):   # NaN passes every comparison below
                if isinstance(v, float) and not math.isfinite(v):
                    bad(f"{flag} must be a finite number, got {value!r}")
        check_dataset(self.dataset)
        if not 0 < self.target <= 1:
            bad(f"--target must be in (0, 1], got {self.target}")
        for name in ("epochs", "lr", "batch_size", "runs", "eval_batch_size", "ema_every", "muon_norm_every",
                     "width", "celu_alpha", "bn_eps", "logit_scale"):
            if getattr(self, name) <= 0:
                bad(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        for name in ("threads", "train_subset", "test_subset", "eval_every", "whiten_bias_epochs", "weight_decay",
                     "bias_lr_scale", "bias_decay_scale", "start_lr_frac", "final_lr_frac"):
            if getattr(self, name) < 0:
                bad(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        for name, low, high in (("warmup_frac", 0, 1), ("momentum", 0, 1), ("muon_momentum", 0, 1),
                                ("bn_momentum", 0, 1)):
            if not low <= getattr(self, name) <= high:
                bad(f"--{name.replace('_', '-')} must be in [{low}, {high}], got {getattr(self, name)}")
        if not self.warmup_frac < self.decay_end_frac <= 1:
            bad(f"--decay-end-frac must be in (--warmup-frac, 1], got {self.decay_end_frac} "
                f"(--warmup-frac {self.warmup_frac})")
        if self.output and Path(self.output).exists() and not Path(self.output).is_dir():
            bad(f"--output {self.output} is a file: give a directory (it is created if missing)")
        for name, allowed in (("flip", ("none", "random", "alternating")),
                              ("schedule", ("piecewise", "onecycle", "constant")),
                              ("optimizer", ("sgd", "muon")),
                              ("muon_ns", ("airbench", "speedrun")),
                              ("arch", ("resnet9", "airbench", "airbench96", "resnet18", "myrtle-ladder")),
                              ("bn_scale_init", ("one", "uniform")),
                              ("whiten_bias_group", ("weights", "biases")),
                              ("whiten_bias_schedule", ("global", "linear")),
                              ("act", ("identity", "relu", "celu", "gelu", "silu")),
                              ("whiten_act", ("", "identity", "relu", "celu", "gelu", "silu")),
                              ("parallel", ("auto", "data", "runs", "none")),
                              ("dist_backend", ("auto", "nccl", "gloo")),
                              ("compile_mode", ("default", "reduce-overhead", "max-autotune",
                                                "max-autotune-no-cudagraphs"))):
            if getattr(self, name) not in allowed:
                bad(f"--{name.replace('_', '-')} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        if self.widths:
            stages = STAGES.get(self.arch, 0)
            parts = [p.strip() for p in self.widths.split(",")]
            if len(parts) != stages or not all(p.isdigit() and int(p) > 0 for p in parts):
                bad(f"--widths for {self.arch} must be {stages} positive integers separated by commas, "
                    f"got {self.widths!r}")
        if not 1 <= self.ladder_step <= 7:
            bad(f"--ladder-step must be 1..7, got {self.ladder_step}")
        if self.prep_kernel not in (1, 3):
            bad(f"--prep-kernel must be 1 or 3, got {self.prep_kernel}")
        if self.prep_kernel != 3 and self.arch != "resnet9":
            bad(f"--prep-kernel is for resnet9 (the {self.arch} arch has no prep conv of that kind)")
        if self.tta not in (0, 1, 2):
            bad(f"--tta must be 0, 1 or 2, got {self.tta}")
        if not 0 <= self.erase_p <= 1 or not 0 <= self.ema_decay < 1 or not 0 <= self.label_smoothing < 1:
            bad("--erase-p must be in [0, 1], --ema-decay and --label-smoothing in [0, 1)")
        if not 0 <= self.seed <= 2 ** 62 or self.threads > 1024 or self.width > 16:   # seeds: torch takes 64 bits
            bad(f"--seed must be in [0, 2**62], --threads at most 1024 and --width at most 16, "
                f"got {self.seed}, {self.threads} and {self.width}")
        area, ratio = self.erase_area, self.erase_ratio     # pairs of numbers (checked above)
        if not (0 < area[0] <= area[1] <= 1 and 0 < ratio[0] <= ratio[1]):
            bad(f"--erase-area must be MIN MAX with 0 < MIN <= MAX <= 1 and --erase-ratio MIN MAX with "
                f"0 < MIN <= MAX, got {area} and {ratio}")
        if not 0 < self.tta_fraction <= 1 or self.ema_ramp_power < 0 or self.muon_lr <= 0:
            bad("--tta-fraction must be in (0, 1], --ema-ramp-power >= 0 and --muon-lr positive")
        if (self.plot or self.save) and not self.output:
            bad("--plot and --save write into --output DIR: give one")
        if self.plot and importlib.util.find_spec("matplotlib") is None:   # say so before training
            bad("--plot needs matplotlib: pip install 'fastres[plot]' (or leave out --plot)")
        if not (0 <= self.brightness and 0 <= self.contrast < 1):
            bad(f"--brightness must be >= 0 and --contrast in [0, 1), got {self.brightness} and {self.contrast}")
        if self.val_split < 0 or self.crop_pad < 0 or self.cutout < 0 or self.ghost_batch < 0:
            bad("--val-split, --crop-pad, --cutout and --ghost-batch must be >= 0")
        if image_size is not None:
            if self.cutout and self.cutout_inside and self.cutout > image_size:
                bad(f"--cutout {self.cutout} does not fit inside {image_size}x{image_size} images "
                    f"(use a smaller one, or --no-cutout-inside)")
            if self.crop_pad >= image_size:
                bad(f"--crop-pad {self.crop_pad} must be smaller than the {image_size}-px images (reflect padding)")
        if train_size is not None:
            if self.val_split >= train_size:
                bad(f"--val-split {self.val_split} leaves no training images (training set has {train_size})")
            if self.batch_size > train_size - self.val_split:
                bad(f"--batch-size {self.batch_size} is larger than the training set "
                    f"({train_size - self.val_split} images)")


@dataclass(frozen=True)
class Recipe:
    name: str
    config: Config
    claim: str = ""      # the measured claim, with device/date/runs; "" until measured


RECIPES: dict[str, Recipe] = {}


def register(name: str, claim: str = "", **values) -> Recipe:
    recipe = Recipe(name, Config(**values), claim)
    RECIPES[name] = recipe
    return recipe


def check_dataset(dataset: str) -> None:
    if dataset not in ("cifar10", "fashion-mnist") and not dataset.endswith(".npz"):
        raise FastresError(f"unknown dataset {dataset!r}; use cifar10, fashion-mnist or a path to a .npz file")


def dataset_key(dataset: str) -> str:
    """Recipes are registered per dataset; every .npz shares the generic 'npz' recipes."""
    return "npz" if dataset.endswith(".npz") else dataset


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise FastresError(f"unknown recipe {name!r}; known recipes: {', '.join(sorted(RECIPES))}")
    return RECIPES[name]


def select_recipe(dataset: str, target: float, device: str = "cuda") -> Recipe:
    """The fastest recipe for `dataset` whose declared target is >= `target`.

    Recipes are registered fastest-first per dataset and device class ('cpu' recipes are only
    picked on CPU when one reaches the target)."""
    check_dataset(dataset)
    if not 0 < target <= 1:
        raise FastresError(f"--target must be in (0, 1], got {target}")
    key = dataset_key(dataset)
    # No recipe can declare a target for an arbitrary .npz set: its generic recipe serves any
    # --target, which then only sets what the report counts as reached.
    candidates = [r for r in RECIPES.values() if dataset_key(r.config.dataset) == key
                  and (r.config.target >= target or key == "npz")]
    if not candidates:
        best = max((r.config.target for r in RECIPES.values() if dataset_key(r.config.dataset) == key), default=None)
        hint = f" (the highest registered target is {best})" if best is not None else ""
        raise FastresError(f"no recipe for dataset {dataset!r} reaches target {target}{hint}")
    on_cpu = device == "cpu"
    preferred = [r for r in candidates if r.name.endswith("-cpu") == on_cpu] or candidates
    return preferred[0]


# Recipes are registered in recipes.py (imported here so they always exist).
from . import recipes  # noqa: E402,F401
