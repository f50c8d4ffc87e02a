"""The LightningCLI base of every model's ``fit``: a fresh run never writes into another run's checkpoint folder.

Imported only by the models' Lightning commands, so inference commands do not pay for importing Lightning.
"""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch.cli import LightningCLI

from datasets.errors import InputError

__all__ = ["MedvlLightningCLI"]


class MedvlLightningCLI(LightningCLI):
    """LightningCLI that refuses a fresh ``fit`` whose ModelCheckpoint ``dirpath`` already holds checkpoints.

    Configs fix ``dirpath`` so that ``--ckpt_path last`` finds ``last.ckpt`` after a restart (``docs/scaling.md``).
    A second run started afresh into that folder would overwrite ``last.ckpt`` and rank its top-k checkpoints
    against the first run's; Lightning only warns. Resuming (``--ckpt_path``) is unaffected.
    """

    def before_fit(self) -> None:
        """Raise :class:`~datasets.errors.InputError` before training when a fresh run would mix checkpoints."""
        if self.config[self.subcommand].get("ckpt_path") is not None:
            return
        for callback in self.trainer.checkpoint_callbacks:
            folder = Path(callback.dirpath) if callback.dirpath else None
            used = sorted(path.name for path in folder.glob("*.ckpt")) if folder and folder.is_dir() else []
            if used:
                shown = ", ".join(used[:3]) + (f" and {len(used) - 3} more" if len(used) > 3 else "")
                raise InputError(
                    f"ModelCheckpoint dirpath {folder} already holds checkpoints of an earlier run ({shown}); a fresh "
                    "fit would mix its checkpoints with them. Resume that run with --ckpt_path last, or give this run "
                    "another dirpath, or remove the folder"
                )
