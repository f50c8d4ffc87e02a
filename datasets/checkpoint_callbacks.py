"""Lightning callbacks that make checkpoints exportable to the portable model folder (:mod:`datasets.pretrained`).

Kept apart from :mod:`datasets.pretrained` so that loading a model folder for inference never imports Lightning.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer

__all__ = ["StorePreprocessing"]


class StorePreprocessing(Callback):
    """Write the DataModule's preprocessing into every checkpoint, for ``<model> export``.

    The modules store their network's config themselves; the preprocessing belongs to the DataModule, so the
    model's LightningCLI adds this callback. ``checkpoint[key] = datamodule.preprocessing.to_dict()`` when the
    DataModule has a ``preprocessing`` of ``preprocessing_type``; otherwise the checkpoint is left as it is.

    Args:
        key: checkpoint key, e.g. ``"brgsa_preprocessing"``.
        preprocessing_type: the preprocessing class the model takes (it has ``to_dict()``).
        check: ``check(net_config, preprocessing)`` raising :class:`~datasets.errors.InputError` for a pair the
            export would refuse; run when fitting starts, so the mismatch costs no training. Defaults to None.
    """

    def __init__(
        self, key: str, preprocessing_type: type, check: Callable[[dict[str, Any], Any], None] | None = None
    ) -> None:
        self.key = key
        self.preprocessing_type = preprocessing_type
        self.check = check

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        preprocessing = getattr(trainer.datamodule, "preprocessing", None)
        net = getattr(pl_module, "net", None)
        if self.check is not None and isinstance(preprocessing, self.preprocessing_type) and net is not None:
            self.check(dict(net.config), preprocessing)

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        preprocessing = getattr(trainer.datamodule, "preprocessing", None)
        if isinstance(preprocessing, self.preprocessing_type):
            checkpoint[self.key] = preprocessing.to_dict()
