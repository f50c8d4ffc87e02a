"""The ``brgsa`` command line: ``brgsa <command> [arguments]``.

- ``brgsa fit|validate|test --config configs/brgsa/<name>.yaml``: LightningCLI over
  :class:`brgsa.module.BrgSAModule` and :class:`brgsa.datamodule.BrgSADataModule`; the validation prompts come from
  the data (``data.val_prompts`` is linked to ``model.val_prompts``) and every checkpoint records the network config
  and preprocessing (the module stores the config, :func:`brgsa.pretrained.store_preprocessing` the preprocessing).
- ``brgsa export CKPT OUT``: a Lightning checkpoint to a portable model folder.
- ``brgsa zeroshot MODEL --benchmark NAME --data-root DIR | --labels CSV --volumes DIR --prompts FILE``.
- ``brgsa convert-official CKPT OUT``: the released BrgSA checkpoint to a model folder (no pickled code runs).
- ``brgsa demo --out DIR``: synthetic benchmark, training, zero-shot evaluation with controls.

Subcommands live in :data:`COMMANDS` as ``name -> Command("module:function", help)``; the function takes the argument
list after the command name and returns an exit status. Its module is imported only when the command runs, so
``brgsa metrics`` does not pay for importing Lightning. To add a command, add one entry.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from datasets.cli_utils import Command, export_command, lightning_command, run_commands

__all__ = ["Command", "COMMANDS", "build_lightning_cli", "export", "fit", "main", "test", "validate"]


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
    from datasets.lightning_cli import MedvlLightningCLI

    class BrgSACLI(MedvlLightningCLI):
        """LightningCLI whose validation prompts follow the data's label columns."""

        def add_arguments_to_parser(self, parser) -> None:  # noqa: ANN001 (jsonargparse parser)
            parser.link_arguments("data.val_prompts", "model.val_prompts", apply_on="instantiate")

    return BrgSACLI


def build_lightning_cli(args: Sequence[str] | None = None, run: bool = True):
    """Build the LightningCLI of BrgSA (``run=False`` returns it with model, data and trainer instantiated).

    Every checkpoint gets the preprocessing (:func:`brgsa.pretrained.store_preprocessing`), so
    ``brgsa export`` can rebuild the model.
    """
    from brgsa.datamodule import BrgSADataModule
    from brgsa.module import BrgSAModule
    from brgsa.pretrained import store_preprocessing

    return _lightning_cli_class()(
        BrgSAModule, BrgSADataModule, args=list(args) if args is not None else None, run=run,
        save_config_kwargs={"overwrite": True}, trainer_defaults={"callbacks": [store_preprocessing()]},
    )


fit = lightning_command(build_lightning_cli, "fit")
validate = lightning_command(build_lightning_cli, "validate")
test = lightning_command(build_lightning_cli, "test")
export = export_command("brgsa", "brgsa.pretrained:export_checkpoint", "BrgSAModule")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``brgsa`` script; returns the exit status (2 for bad input)."""
    return run_commands("brgsa", __import__("brgsa").__doc__, COMMANDS, argv)


if __name__ == "__main__":
    sys.exit(main())
