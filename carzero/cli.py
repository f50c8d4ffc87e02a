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

import sys
from collections.abc import Sequence

from datasets.cli_utils import Command, export_command, lightning_command, run_commands

__all__ = ["COMMANDS", "build_lightning_cli", "export", "fit", "main", "test", "validate"]


def _lightning_cli_class() -> type:
    from datasets.lightning_cli import MedvlLightningCLI

    class CARZeroCLI(MedvlLightningCLI):
        """LightningCLI whose validation prompts follow the data's label columns."""

        def add_arguments_to_parser(self, parser) -> None:  # noqa: ANN001 (jsonargparse parser)
            parser.link_arguments("data.val_prompts", "model.val_prompts", apply_on="instantiate")

    return CARZeroCLI


def build_lightning_cli(args: Sequence[str] | None = None, run: bool = True):
    """Build the LightningCLI of CARZero (``run=False`` returns it with model, data and trainer instantiated).

    Every checkpoint gets the preprocessing (:func:`carzero.pretrained.store_preprocessing`), so
    ``carzero export`` can rebuild the model.
    """
    from carzero.datamodule import CARZeroDataModule
    from carzero.module import CARZeroModule
    from carzero.pretrained import store_preprocessing

    return _lightning_cli_class()(
        CARZeroModule, CARZeroDataModule, args=list(args) if args is not None else None, run=run,
        save_config_kwargs={"overwrite": True}, trainer_defaults={"callbacks": [store_preprocessing()]},
    )


fit = lightning_command(build_lightning_cli, "fit")
validate = lightning_command(build_lightning_cli, "validate")
test = lightning_command(build_lightning_cli, "test")
export = export_command("carzero", "carzero.pretrained:export_checkpoint", "CARZeroModule")

COMMANDS: dict[str, Command] = {
    "fit": Command("carzero.cli:fit", "train with LightningCLI (--config configs/carzero/<name>.yaml)"),
    "validate": Command("carzero.cli:validate", "zero-shot validation of a checkpoint with LightningCLI"),
    "test": Command("carzero.cli:test", "zero-shot test of a checkpoint with LightningCLI"),
    "export": Command("carzero.cli:export", "convert a Lightning checkpoint into a portable model folder"),
    "zeroshot": Command("carzero.zeroshot:main", "zero-shot scores, metrics and ROC curves of a model folder"),
    "convert-official": Command("carzero.convert:main", "convert the released CARZero checkpoint into a model folder"),
    "align-prompts": Command("carzero.prompts:main", "reports to \"There is <finding>\" prompts (rules or LLM)"),
    "demo": Command("carzero.demo:main", "end-to-end demo on the synthetic chest X-ray benchmark, with controls"),
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``carzero`` console script; returns the exit status (2 for bad input)."""
    return run_commands("carzero", __import__("carzero").__doc__, COMMANDS, argv)


if __name__ == "__main__":
    sys.exit(main())
