"""The ``carzero`` command line.

- ``carzero fit|validate|test --config configs/carzero/<name>.yaml``: LightningCLI over
  :class:`carzero.module.CARZeroModule` and :class:`carzero.datamodule.CARZeroDataModule`; the validation prompts
  come from the data (``data.val_prompts`` is linked to ``model.val_prompts``).
- ``carzero export CKPT OUT``: a Lightning checkpoint to a portable model folder.
- ``carzero zeroshot MODEL --benchmark NAME --data-root DIR | --labels TABLE ...``: scores, metrics, ROC curves.
- ``carzero convert-official CKPT OUT``: the released CARZero checkpoint to a model folder (no pickled code runs).
- ``carzero align-prompts ...``: LLM-style prompt alignment of reports (:mod:`carzero.prompts`).
- ``carzero demo --out DIR``: synthetic benchmark, training, zero-shot evaluation with controls.

Bad input exits with status 2 and one line naming the culprit (``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from datasets.cli_utils import run_cli, setup_logging
from datasets.errors import InputError

__all__ = ["build_lightning_cli", "main"]

_LIGHTNING_COMMANDS = ("fit", "validate", "test")


def _lightning_cli_class() -> type:
    from lightning.pytorch.cli import LightningCLI

    class CARZeroCLI(LightningCLI):
        """LightningCLI whose validation prompts follow the data's label columns."""

        def add_arguments_to_parser(self, parser) -> None:  # noqa: ANN001 (jsonargparse parser)
            parser.link_arguments("data.val_prompts", "model.val_prompts", apply_on="instantiate")

    return CARZeroCLI


def build_lightning_cli(args: Sequence[str] | None = None, run: bool = True):
    """Build the LightningCLI of CARZero (``run=False`` returns it with model, data and trainer instantiated).

    Every checkpoint gets the preprocessing (:class:`carzero.pretrained.StorePreprocessing`), so
    ``carzero export`` can rebuild the model.
    """
    from carzero.datamodule import CARZeroDataModule
    from carzero.module import CARZeroModule
    from carzero.pretrained import StorePreprocessing

    return _lightning_cli_class()(
        CARZeroModule, CARZeroDataModule, args=list(args) if args is not None else None, run=run,
        save_config_kwargs={"overwrite": True}, trainer_defaults={"callbacks": [StorePreprocessing()]},
    )


def _lightning(args: list[str]) -> int:
    build_lightning_cli(args)
    return 0


def _export(args: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="carzero export", description="Convert a Lightning .ckpt to a model folder.")
    parser.add_argument("checkpoint", help="CARZeroModule checkpoint (.ckpt) from `carzero fit`; read weights_only")
    parser.add_argument("out", help="model folder to write")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing folder")
    options = parser.parse_args(args)
    from carzero.pretrained import export_checkpoint

    print(f"wrote {export_checkpoint(options.checkpoint, options.out, overwrite=options.overwrite)}")
    return 0


def _lazy(module: str, what: str) -> Callable[[list[str]], int]:
    """A command whose implementation is imported only when it runs."""

    def command(args: list[str]) -> int:
        try:
            implementation = importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name != module:
                raise
            raise InputError(f"`carzero {what}` is not available in this installation: module {module} is missing"
                             ) from err
        return implementation.main(args)

    return command


_COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "export": _export,
    "zeroshot": _lazy("carzero.zeroshot", "zeroshot"),
    "convert-official": _lazy("carzero.convert", "convert-official"),
    "align-prompts": _lazy("carzero.prompts", "align-prompts"),
    "demo": _lazy("carzero.demo", "demo"),
}


def _usage() -> str:
    return (
        "usage: carzero {fit,validate,test} --config CONFIG [...]\n"
        "       carzero export CKPT OUT\n"
        "       carzero zeroshot MODEL (--benchmark NAME --data-root DIR | --labels TABLE --adapter NAME "
        "--images DIR --prompts FILE) [--out DIR]\n"
        "       carzero convert-official CKPT OUT\n"
        "       carzero align-prompts ...\n"
        "       carzero demo --out DIR\n"
        "CARZero (cross-attention alignment for radiology zero-shot classification, CVPR 2024), unofficial "
        "reconstruction.\n"
    )


def _main(args: list[str]) -> int:
    if not args or args[0] in ("-h", "--help"):
        print(_usage())
        return 0
    command, rest = args[0], args[1:]
    setup_logging()
    if command in _LIGHTNING_COMMANDS:
        return _lightning(args)
    if command in _COMMANDS:
        return _COMMANDS[command](rest)
    print(_usage(), file=sys.stderr)
    print(f"carzero: error: unknown command {command!r}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``carzero`` console script; returns the exit status."""
    try:
        return run_cli("carzero", _main, argv)
    except SystemExit as exit_:  # argparse / jsonargparse usage errors
        return exit_.code if isinstance(exit_.code, int) else 2


if __name__ == "__main__":
    sys.exit(main())
