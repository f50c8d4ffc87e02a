"""The ``brgsa`` command line: ``brgsa <command> [arguments]``.

- ``brgsa fit|validate|test --config configs/brgsa/<name>.yaml``: LightningCLI over
  :class:`brgsa.module.BrgSAModule` and :class:`brgsa.datamodule.BrgSADataModule`; the validation prompts come from
  the data (``data.val_prompts`` is linked to ``model.val_prompts``) and every checkpoint records the network config
  and preprocessing (the module stores the config, :class:`brgsa.pretrained.StorePreprocessing` the preprocessing).
- ``brgsa export CKPT OUT``: a Lightning checkpoint to a portable model folder.
- ``brgsa zeroshot MODEL --benchmark NAME --data-root DIR | --labels CSV --volumes DIR --prompts FILE``.
- ``brgsa convert-official CKPT OUT``: the released BrgSA checkpoint to a model folder (no pickled code runs).
- ``brgsa demo --out DIR``: synthetic benchmark, training, zero-shot evaluation with controls.

Subcommands live in :data:`COMMANDS` as ``name -> Command("module:function", help)``; the function takes the argument
list after the command name and returns an exit status. Its module is imported only when the command runs, so
``brgsa metrics`` does not pay for importing Lightning. To add a command, add one entry.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from typing import NamedTuple

from datasets.cli_utils import run_cli, setup_logging
from datasets.errors import InputError

__all__ = ["Command", "COMMANDS", "build_lightning_cli", "export", "fit", "main", "test", "validate"]


class Command(NamedTuple):
    """A subcommand: ``target`` is ``"module:function"``, the function taking the remaining arguments."""

    target: str
    help: str


COMMANDS: dict[str, Command] = {
    "metrics": Command("brgsa.metrics:main", "per-class and macro metrics of per-volume scores against CT-RATE labels"),
    "summarize": Command("brgsa.summarize:main", "summarise reports into short finding sentences (rules or local LLM)"),
    "prepare": Command("brgsa.prepare:main", "preprocess CT volumes into the cache (parallel, resumable)"),
    "fit": Command("brgsa.cli:fit", "train with LightningCLI (--config configs/brgsa/<name>.yaml)"),
    "validate": Command("brgsa.cli:validate", "zero-shot validation of a checkpoint with LightningCLI"),
    "test": Command("brgsa.cli:test", "zero-shot test of a checkpoint with LightningCLI"),
    "export": Command("brgsa.cli:export", "convert a Lightning checkpoint into a portable model folder"),
    "zeroshot": Command("brgsa.zeroshot:main", "zero-shot scores and metrics of a model folder on labelled volumes"),
    "convert-official": Command("brgsa.convert:main", "convert the released BrgSA checkpoint into a model folder"),
    "demo": Command("brgsa.demo:main", "end-to-end demo on the synthetic 3D CT benchmark, with controls"),
}


def _lightning_cli_class() -> type:
    from lightning.pytorch.cli import LightningCLI

    class BrgSACLI(LightningCLI):
        """LightningCLI whose validation prompts follow the data's label columns."""

        def add_arguments_to_parser(self, parser) -> None:  # noqa: ANN001 (jsonargparse parser)
            parser.link_arguments("data.val_prompts", "model.val_prompts", apply_on="instantiate")

    return BrgSACLI


def build_lightning_cli(args: Sequence[str] | None = None, run: bool = True):
    """Build the LightningCLI of BrgSA (``run=False`` returns it with model, data and trainer instantiated).

    Every checkpoint gets the preprocessing (:class:`brgsa.pretrained.StorePreprocessing`), so
    ``brgsa export`` can rebuild the model.
    """
    from brgsa.datamodule import BrgSADataModule
    from brgsa.module import BrgSAModule
    from brgsa.pretrained import StorePreprocessing

    if args is not None and list(args) == sys.argv[1:]:
        args = None  # the `brgsa` script itself: let LightningCLI read sys.argv (it warns when given both)
    return _lightning_cli_class()(
        BrgSAModule, BrgSADataModule, args=list(args) if args is not None else None, run=run,
        save_config_kwargs={"overwrite": True}, trainer_defaults={"callbacks": [StorePreprocessing()]},
    )


def _lightning_command(subcommand: str) -> Callable[[list[str]], int]:
    def command(args: list[str]) -> int:
        setup_logging()
        build_lightning_cli([subcommand, *args])
        return 0

    command.__doc__ = f"``brgsa {subcommand}``: LightningCLI ``{subcommand}`` with the arguments after the command."
    return command


fit = _lightning_command("fit")
validate = _lightning_command("validate")
test = _lightning_command("test")


def export(args: list[str]) -> int:
    """``brgsa export CKPT OUT``: a checkpoint of ``brgsa fit`` to a portable model folder."""
    parser = argparse.ArgumentParser(prog="brgsa export", description="Convert a Lightning .ckpt to a model folder.")
    parser.add_argument("checkpoint", help="BrgSAModule checkpoint (.ckpt) from `brgsa fit`; read weights_only")
    parser.add_argument("out", help="model folder to write")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing folder")
    options = parser.parse_args(args)
    setup_logging()
    from brgsa.pretrained import export_checkpoint

    print(f"wrote {export_checkpoint(options.checkpoint, options.out, overwrite=options.overwrite)}")
    return 0


def _usage() -> str:
    lines = [__import__("brgsa").__doc__.strip(), "", "usage: brgsa <command> [arguments] [--debug]", "", "commands:"]
    lines += [f"  {name:<18} {command.help}" for name, command in COMMANDS.items()]
    lines.append("\n`brgsa <command> --help` describes a command; --debug shows tracebacks for bad input.")
    return "\n".join(lines)


def _dispatch(args: list[str]) -> int:
    if not args or args[0] in ("-h", "--help"):
        print(_usage())
        return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        raise InputError(f"unknown command {name!r}; choose from: {', '.join(COMMANDS)}")
    module, function = COMMANDS[name].target.split(":")
    return getattr(importlib.import_module(module), function)(rest)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``brgsa`` script; returns the exit status (2 for bad input)."""
    args = list(sys.argv[1:] if argv is None else argv)
    program = f"brgsa {args[0]}" if args and args[0] in COMMANDS else "brgsa"
    try:
        return run_cli(program, _dispatch, args)
    except SystemExit as exit_:  # argparse / jsonargparse usage errors and --help
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 2)


if __name__ == "__main__":
    sys.exit(main())
