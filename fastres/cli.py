"""Command line: `python -m fastres [train] ...`; every train flag is a Config field.

    python -m fastres --target 0.94                      # fastest CIFAR-10 recipe reaching 94%
    python -m fastres --dataset fashion-mnist --recipe fashion-cpu --device cpu
    python -m fastres --dataset my.npz --epochs 5 --runs 3 --output out/
    python -m fastres --list-recipes
    torchrun --standalone --nproc_per_node=8 -m fastres --target 0.94 --runs 25   # distributed.py

Errors a user can fix print one line `fastres: error: ...` and exit with status 2.
"""
from __future__ import annotations

import argparse
import sys
import typing
from dataclasses import fields

from . import config as config_mod
from . import distributed
from .config import RECIPES, Config, get_recipe, select_recipe
from .errors import FastresError, Parser
from .runner import resolve_device, run_many

SUBCOMMANDS = {}   # name -> (add_arguments(parser), run(args) -> exit code); study/bench add theirs


def subcommand(name: str, help: str):
    def register(pair):
        SUBCOMMANDS[name] = (help, *pair)
        return pair
    return register


def field_help(name: str) -> str:
    """The comment after a Config field in config.py is its --help text (one source of truth)."""
    import inspect
    for line in inspect.getsource(Config).splitlines():
        stripped = line.strip()
        if stripped.startswith(f"{name}:") and "#" in stripped:
            return stripped.split("#", 1)[1].strip().replace("%", "%%")
    return ""


def add_config_arguments(parser: argparse.ArgumentParser):
    """One flag per Config field; defaults are None so only what the user typed overrides the recipe."""
    hints = typing.get_type_hints(Config)
    group = parser.add_argument_group("configuration (override the recipe's values)")
    for f in fields(Config):
        flag, kind = "--" + f.name.replace("_", "-"), hints[f.name]
        default = f.default
        help_text = f"{field_help(f.name)} [default {default!r}]"
        if kind is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif kind is tuple:
            group.add_argument(flag, type=float, nargs=2, metavar=("MIN", "MAX"), default=None, help=help_text)
        else:
            group.add_argument(flag, type=kind, default=None, metavar=f.name.upper(), help=help_text)


def config_from_args(args: argparse.Namespace) -> Config:
    """Recipe (named, or selected by --target for the dataset) + the flags the user set."""
    explicit = {f.name: getattr(args, f.name) for f in fields(Config) if getattr(args, f.name) is not None}
    if "erase_area" in explicit or "erase_ratio" in explicit:
        explicit.update({k: tuple(v) for k, v in explicit.items() if k in ("erase_area", "erase_ratio")})
    dataset = explicit.get("dataset", "cifar10")
    if args.recipe:
        recipe = get_recipe(args.recipe)
    else:
        target = explicit.get("target", 0.94 if dataset == "cifar10" else None)
        if target is None:   # no target given: the fastest recipe of the dataset, whatever its target
            target = min((r.config.target for r in RECIPES.values()
                          if config_mod.dataset_key(r.config.dataset) == config_mod.dataset_key(dataset)),
                         default=0.94)
        device = resolve_device(explicit.get("device", "auto")).type
        recipe = select_recipe(dataset, target, device)
    cfg = recipe.config.replace(**explicit)
    cfg.validate()
    if resolve_device(cfg.device).type == "cpu" and cfg.compile and "compile" not in explicit:
        # A compiled conv net trained 1.15-1.8x slower than eager on our CPUs (machine notes):
        # the GPU recipes' compile=True applies on GPUs only, unless --compile is given.
        cfg = cfg.replace(compile=False)
    return cfg, recipe


def idle_settings(cfg: Config) -> list[str]:
    """Settings that change nothing in this config, said once: an ablation such as
    `--recipe cifar10-94 --ema-decay 0` also switches off the recipe's lookahead."""
    notes = []
    if not cfg.ema_decay and (idle := [f for f in ("lookahead", "ema_ramp_power") if getattr(cfg, f)]):
        flags = " and ".join("--" + f.replace("_", "-") for f in idle)
        notes.append(f"{flags} {'has' if len(idle) == 1 else 'have'} no effect without --ema-decay")
    if cfg.tta == 0 and cfg.tta_fraction < 1:
        notes.append("--tta-fraction has no effect with --tta 0")
    return notes


def add_train_arguments(parser: argparse.ArgumentParser):
    parser.add_argument("--recipe", help="named recipe (see --list-recipes); default: chosen by --target")
    parser.add_argument("--list-recipes", action="store_true", help="list the recipes and exit")
    add_config_arguments(parser)


def run_train(args: argparse.Namespace, printer=print) -> int:
    if args.list_recipes:
        width = max(map(len, RECIPES))
        for name, r in RECIPES.items():
            printer(f"{name:{width}s} dataset={r.config.dataset:14s} target={r.config.target:<5} "
                    f"arch={r.config.arch:9s} epochs={r.config.epochs:<5} batch={r.config.batch_size:<5} "
                    f"{r.claim or '(not yet measured)'}")
        return 0
    cfg, recipe = config_from_args(args)
    if distributed.is_main_process(cfg):    # under torchrun only rank 0 prints
        printer(f"recipe {recipe.name} on {cfg.dataset}: target {cfg.target}, {cfg.runs} run(s), device {cfg.device}")
        if resolve_device(cfg.device).type == "cpu" and recipe.config.compile:   # a GPU speed recipe
            printer(f"note: recipe {recipe.name} is sized for a GPU and will be slow on this CPU "
                    f"(a CPU recipe: --dataset fashion-mnist --recipe fashion-cpu)")
        for note in idle_settings(cfg):
            printer(f"note: {note}")
    run_many(cfg, printer)
    return 0


subcommand("train", "train a recipe and report time-to-accuracy (default)")((add_train_arguments, run_train))


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="fastres", description="Speed-optimised ResNet training with honest "
                                     "time-to-accuracy. Without a subcommand, `train` is run.",
                    epilog="`fastres train --help` lists the training flags (one per Config field); "
                           "`fastres --list-recipes` the recipes.")
    sub = parser.add_subparsers(dest="command")
    parser.subcommands = {}
    for name, (help, add_arguments, _) in SUBCOMMANDS.items():
        parser.subcommands[name] = sub.add_parser(name, help=help, description=help)
        add_arguments(parser.subcommands[name])
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0] not in SUBCOMMANDS and argv[0] not in ("-h", "--help")):
        argv = ["train", *argv]
    parser = build_parser()
    try:
        args, unknown = parser.parse_known_args(argv)
        if unknown:     # name the subcommand whose --help lists the flags
            parser.subcommands[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    except SystemExit as e:          # --help (0) or a bad flag (2, already printed as one line)
        return e.code
    try:
        return distributed.leave(SUBCOMMANDS[args.command][2](args))
    except FastresError as e:
        print(f"fastres: error: {e}", file=sys.stderr)
        return e.exit_code
    except (OSError, MemoryError) as e:     # a full disk, an unwritable cache folder, no memory
        print(f"fastres: error: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fastres: interrupted", file=sys.stderr)
        return 130


from . import study  # noqa: E402,F401  (registers the `study` subcommand)
