"""The built-in studies of `python -m fastres study` (see study.py for the machinery).

Each is plain data: a base Config and rows of config changes, with the published figure of
the seed report (anchors.md) where one exists. Our own assumptions, where the sources are
silent, are written next to each study.
"""
from .config import Config, select_recipe
from .study import Row, Study, cumulative, register_study

# Myrtle.ai's backbone study training (anchors.md): 20 epochs, batch 512, LR 0 -> 0.4 (epoch 4)
# -> 0 (epoch 20), Nesterov momentum 0.9, weight decay 5e-4, ReLU; 2018 PyTorch defaults (BN
# scales U[0,1], logits unscaled) until step 6. Our assumptions where the source is silent:
# pad-4 crop + flip + 8x8 cutout (the DAWNBench baseline's augmentation) and no TTA (TTA came
# later, in the bag of tricks).
MYRTLE_BASE = Config(dataset="cifar10", target=0.94, arch="myrtle-ladder", ladder_step=1, act="relu",
                     bn_scale_init="uniform", logit_scale=1.0, whiten=False, crop_pad=4, flip="random",
                     cutout=8, epochs=20, batch_size=512, lr=0.4, momentum=0.9, nesterov=True,
                     weight_decay=5e-4, schedule="piecewise", warmup_frac=0.2, tta=0)
LADDER_STEPS = [("original", {}, 55.9), ("no-repeat-bn", {"ladder_step": 2}, 56.0),
                ("conv3x3", {"ladder_step": 3}, 85.6), ("maxpool", {"ladder_step": 4}, 89.7),
                ("global-maxpool", {"ladder_step": 5}, 90.7),
                ("bn-init-logit-scale", {"ladder_step": 6, "bn_scale_init": "one", "logit_scale": 0.125}, 91.1),
                ("residual", {"ladder_step": 7}, 93.7)]
register_study(Study("backbone", "Myrtle.ai's architecture ladder on CIFAR-10 (model.py MyrtleLadder)",
                     MYRTLE_BASE, cumulative(LADDER_STEPS),
                     source="Myrtle.ai backbone study, single runs on a V100 (anchors.md)"))

# The same ladder on Fashion-MNIST, with the fashion recipes' augmentation (2-px translate +
# flip, no cutout on 28x28), plus the seed report's CELU variant of the final net (Myrtle's
# first CELU alpha, 0.075, chosen for unfrozen BN scales).
register_study(Study("fashion-backbone", "Myrtle.ai's architecture ladder on Fashion-MNIST, plus CELU",
                     MYRTLE_BASE.replace(dataset="fashion-mnist", crop_pad=2, cutout=0),
                     cumulative([(n, c) for n, c, _ in LADDER_STEPS]
                                + [("residual-celu", {"act": "celu", "celu_alpha": 0.075})])))

# The seed report's ResNet-18 runs, read as D2L's train_ch6 (plain SGD, no momentum, weight
# decay or augmentation; we train at 28x28 where D2L resizes to 96) and one-cycle as PyTorch's
# OneCycleLR (cosine, 30% warm-up from peak/25, down to ~0). Random erasing at p = 0.5 with
# the usual area 0.02-0.33 and aspect 0.3-3.3.
ONECYCLE = {"schedule": "onecycle", "warmup_frac": 0.3, "start_lr_frac": 0.04, "final_lr_frac": 0.0}
register_study(Study(
    "fashion-hparams", "ResNet-18 (D2L) on Fashion-MNIST: LR schedule, batch size, epochs, random erasing",
    Config(dataset="fashion-mnist", target=0.91, arch="resnet18", act="relu", crop_pad=0, flip="none",
           epochs=10, batch_size=128, lr=0.01, momentum=0.0, nesterov=False, weight_decay=0.0,
           schedule="constant", tta=0),
    [Row("const-lr0.01", {}, 91.2),
     Row("onecycle-0.1", {**ONECYCLE, "lr": 0.1}, 93.5),
     Row("onecycle-0.1-b512-2ep", {**ONECYCLE, "lr": 0.1, "batch_size": 512, "epochs": 2}, 91.2),
     Row("onecycle-0.4-b512-2ep", {**ONECYCLE, "lr": 0.4, "batch_size": 512, "epochs": 2}, 90.6),
     Row("onecycle-0.4-b512-2ep-erase", {**ONECYCLE, "lr": 0.4, "batch_size": 512, "epochs": 2,
                                         "erase_p": 0.5}, 88.7)],
    source="the seed report, single runs (anchors.md)"))

# The seed report's CIFAR-10 steps; the report names the steps and the final figure only (90.2%
# in 191 s), so the values of each step are ours. Every step keeps the previous ones; "BN scale
# init" is read as Myrtle's step 6 (scales 1 instead of U[0,1], logits x0.125).
register_study(Study(
    "cifar-ladder", "the seed report's CIFAR-10 ladder, from plain SGD to the tuned ResNet-9",
    Config(dataset="cifar10", target=0.9, arch="resnet9", act="relu", bn_scale_init="uniform", logit_scale=1.0,
           crop_pad=0, flip="none", epochs=10, batch_size=512, lr=0.01, momentum=0.0, nesterov=False,
           weight_decay=0.0, schedule="constant", tta=0),
    [Row("resnet18", {"arch": "resnet18"})] + cumulative([
        ("resnet9", {}), ("augment", {"crop_pad": 4, "flip": "random"}),
        ("lr-schedule", {**ONECYCLE, "lr": 0.4}), ("momentum", {"momentum": 0.9, "nesterov": True}),
        ("weight-decay", {"weight_decay": 5e-4}), ("random-erasing", {"erase_p": 0.5}),
        ("label-smoothing-bn-init", {"label_smoothing": 0.2, "bn_scale_init": "one", "logit_scale": 0.125}),
        ("more-epochs-smaller-batch", {"epochs": 20, "batch_size": 256}, 90.2)]),
    baseline="resnet9", source="the seed report: final step only (anchors.md)"))

# Leave-one-out over the tricks of the recipe `python -m fastres --target 0.94` runs on a GPU.
# Frozen BN scales come with bias LR x64 / decay /64 (Myrtle), so removing the freeze resets
# those too: unfrozen scales at 64x the LR would be a different experiment.
TRICKS = [  # (row, is the trick on in cfg, changes that turn it off)
    ("no-whiten", lambda c: c.whiten and c.arch not in ("airbench", "airbench96"), {"whiten": False}),
    ("no-label-smoothing", lambda c: c.label_smoothing > 0, {"label_smoothing": 0.0}),
    ("no-ema-lookahead", lambda c: c.ema_decay > 0, {"ema_decay": 0.0, "lookahead": False}),
    ("no-frozen-bn-scale", lambda c: c.bn_freeze_scale,
     {"bn_freeze_scale": False, "bias_lr_scale": 1.0, "bias_decay_scale": 1.0}),
    ("random-flip", lambda c: c.flip == "alternating", {"flip": "random"}),
    ("no-tta", lambda c: c.tta > 0, {"tta": 0}),
    ("no-ghost-bn", lambda c: c.ghost_batch > 0, {"ghost_batch": 0}),
    ("no-cutout", lambda c: c.cutout > 0, {"cutout": 0}),
]


def tricks_study() -> Study:
    recipe = select_recipe("cifar10", 0.94)
    rows = [Row("full-recipe")] + [Row(name, changes) for name, on, changes in TRICKS if on(recipe.config)]
    return Study("tricks", f"leave-one-out over the tricks of recipe {recipe.name} (each removed in turn)",
                 recipe.config, rows)


register_study(tricks_study, "tricks")
