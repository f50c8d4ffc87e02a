"""The LightningModule that trains CARZero contrastively and validates it by zero-shot AUROC.

Batches:

* training: ``{"image": (B, C, H, W), "text": list[str] of B reports/sentences}``, one text per image. Horizontal
  flips should stay off (the data layer's default) because reports name sides ("left pleural effusion").
* validation: ``{"image": (B, C, H, W), "label": (B, K)}`` with 1/0 and NaN for "not labelled", columns in the order
  of the ``K`` validation prompts.

Multi-process training: each process encodes its own ``B`` images and texts, then gathers the image tokens and the
text tokens + masks of all processes with ``self.all_gather(..., sync_grads=True)`` (texts are padded to
``text_max_length`` first so every process has the same shape). It scores its images against all gathered texts and
its texts against all gathered images, so the contrastive softmax spans the global batch while each process only
computes ``2 B x B_global`` pairs; gradients flow back to the process that produced each token. This needs the same
``B`` on every process (``drop_last=True``). With one process nothing is gathered.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable

from carzero.losses import CARZeroLoss
from carzero.model import CARZero, ImageTokens, TextTokens
from carzero.scoring import score_all_pairs
from datasets.errors import InputError
from datasets.zeroshot_training import log_zero_shot_auroc, plateau_optimizers

__all__ = ["CARZeroModule", "read_prompt_file"]



def read_prompt_file(path: str | Path) -> list[str]:
    """Read class prompts: a ``.json`` list of strings, a ``.json`` object mapping class index to a string or a
    one-element list (the released ``<set>_text.json`` format), or a text file with one prompt per line.

    Raises:
        FileNotFoundError: no file at ``path``.
        InputError: the file holds no prompts or is not in one of these formats.
    """
    from datasets.benchmarks import missing_file_reason

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(2, missing_file_reason("prompt file", path), str(path))
    if path.suffix == ".json":
        try:
            content = json.loads(path.read_text(encoding="utf-8-sig"))
        except json.JSONDecodeError as err:
            raise InputError(f"{path} is not valid JSON: {err}") from err
        if isinstance(content, dict):
            try:
                ordered = [content[key] for key in sorted(content, key=int)]
            except ValueError as err:
                raise InputError(
                    f"{path}: the keys of a prompt object must be class indices, got {list(content)}"
                ) from err
            content = [value[0] if isinstance(value, list) and len(value) == 1 else value for value in ordered]
        if not isinstance(content, list) or not all(isinstance(prompt, str) for prompt in content):
            raise InputError(f"{path} must hold a list of prompt strings or an object {{index: prompt}}")
        prompts = content
    else:
        prompts = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
    if not prompts:
        raise InputError(f"{path} holds no prompts")
    return prompts


def _text_id(text: str) -> int:
    """A 63-bit id of a text, equal for equal texts in every process (``hash`` is salted per process)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big") >> 1


class CARZeroModule(LightningModule):
    """Trains a :class:`~carzero.model.CARZero` network with CARZero's symmetric cross-entropy.

    Args:
        net: the model.
        loss: the loss. Defaults to None: :class:`~carzero.losses.CARZeroLoss` without temperature (as in the paper),
            with identical texts of a batch as positives (``duplicates_as_positives=False`` is the released loss).
        optimizer: optimizer factory. Defaults to None: the paper's Adam (lr 5e-5, betas (0.5, 0.999), weight decay
            1e-6).
        scheduler: learning-rate scheduler factory, stepped each epoch on ``val/macro_auroc``. Defaults to None:
            ReduceLROnPlateau (factor 0.5, patience 5, mode "max"); the paper monitors a validation loss instead.
        val_prompts: one zero-shot prompt per label column of the validation set, e.g. ``["There is Atelectasis"]``.
            Defaults to None.
        val_prompt_file: file with the prompts instead (see :func:`read_prompt_file`). Defaults to None.
        val_image_chunk_size: images per fusion block when scoring. Defaults to 64.
        val_text_chunk_size: prompts per fusion block when scoring. Defaults to 64.
    """

    def __init__(
        self,
        net: CARZero,
        loss: CARZeroLoss | None = None,
        optimizer: OptimizerCallable | None = None,
        scheduler: LRSchedulerCallable | None = None,
        val_prompts: list[str] | None = None,
        val_prompt_file: str | None = None,
        val_image_chunk_size: int = 64,
        val_text_chunk_size: int = 64,
    ) -> None:
        super().__init__()
        if val_prompts is not None and val_prompt_file is not None:
            raise ValueError("give val_prompts or val_prompt_file, not both")
        if val_prompts is not None and (not val_prompts or not all(isinstance(p, str) for p in val_prompts)):
            raise ValueError(f"val_prompts must be a non-empty list of strings, got {val_prompts!r}")
        self.save_hyperparameters(ignore=["net", "loss"])
        self.net = net
        self.loss = loss if loss is not None else CARZeroLoss()
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.val_prompts = list(val_prompts) if val_prompts is not None else None
        if val_prompt_file is not None:
            self.val_prompts = read_prompt_file(val_prompt_file)
        self.val_image_chunk_size = val_image_chunk_size
        self.val_text_chunk_size = val_text_chunk_size
        self._val_text_tokens: TextTokens | None = None
        self._val_scores: list[torch.Tensor] = []
        self._val_labels: list[torch.Tensor] = []

    # ------------------------------------------------------------------------------------------------ training
    def _world_size(self) -> int:
        return self.trainer.world_size if self._trainer is not None else 1

    def _gather_images(self, tokens: ImageTokens) -> ImageTokens:
        global_token = self.all_gather(tokens.global_token, sync_grads=True).flatten(0, 1)  # (W * B, D)
        patches = self.all_gather(tokens.patches, sync_grads=True).flatten(0, 1)  # (W * B, P, D)
        return ImageTokens(global_token, patches)

    def _gather_texts(self, tokens: TextTokens) -> TextTokens:
        pad = self.net.config["text_max_length"] - tokens.words.shape[1]
        words = torch.nn.functional.pad(tokens.words, (0, 0, 0, pad))  # (B, max_length, D)
        mask = torch.nn.functional.pad(tokens.mask, (0, pad), value=False)  # (B, max_length)
        return TextTokens(
            self.all_gather(tokens.sentence, sync_grads=True).flatten(0, 1),
            self.all_gather(words, sync_grads=True).flatten(0, 1),
            self.all_gather(mask).flatten(0, 1),
        )

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        images, texts = batch["image"], batch["text"]
        if isinstance(texts, str) or len(texts) != images.shape[0]:
            raise ValueError(
                f"a training batch needs one text per image: got {images.shape[0]} images and "
                f"{1 if isinstance(texts, str) else len(texts)} texts"
            )
        image_tokens = self.net.encode_images(images)
        text_tokens = self.net.encode_texts(list(texts))
        text_ids = torch.tensor([_text_id(text) for text in texts], device=images.device)  # (B,) int64
        if self._world_size() == 1:
            rows = columns = self.net.all_pair_scores(image_tokens, text_tokens)  # (B, B) each
            label_offset, global_ids = 0, text_ids
        else:
            rows = self.net.all_pair_scores(image_tokens, self._gather_texts(text_tokens))  # (B, W * B)
            columns = self.net.all_pair_scores(self._gather_images(image_tokens), text_tokens)  # (W * B, B)
            label_offset, global_ids = self.global_rank * images.shape[0], self.all_gather(text_ids).flatten()
        losses = self.loss(
            rows.image_to_text, columns.image_to_text.T, rows.text_to_image, columns.text_to_image.T, label_offset,
            positives=text_ids[:, None] == global_ids[None, :],  # (B, W * B): identical texts
        )
        for name, value in losses.items():
            self.log(f"train/{name}", value, prog_bar=name == "loss", batch_size=images.shape[0])
        return losses["loss"]

    # ---------------------------------------------------------------------------------------------- validation
    def on_validation_epoch_start(self) -> None:
        if self.val_prompts is None:
            raise ValueError(
                "validation needs the class prompts: pass val_prompts (one per label column) or val_prompt_file"
            )
        with torch.no_grad():
            self._val_text_tokens = self.net.encode_texts(self.val_prompts)
        self._val_scores, self._val_labels = [], []

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        images, labels = batch["image"], batch["label"]
        if labels.ndim != 2 or labels.shape[1] != len(self.val_prompts):
            raise ValueError(
                f"validation labels must be (B, {len(self.val_prompts)}), one column per prompt, got "
                f"{tuple(labels.shape)}"
            )
        image_tokens = self.net.encode_images(images)
        scores = score_all_pairs(
            self.net, image_tokens, self._val_text_tokens, self.val_image_chunk_size, self.val_text_chunk_size
        )
        self._val_scores.append(scores.mean.float())
        self._val_labels.append(labels.float())

    def on_validation_epoch_end(self) -> None:
        log_zero_shot_auroc(self, self._val_scores, self._val_labels, self.val_prompts or [])
        self._val_scores, self._val_labels, self._val_text_tokens = [], [], None

    # ----------------------------------------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store ``net.config`` under ``"carzero_config"``: any checkpoint, CLI or not, rebuilds ``net``."""
        checkpoint["carzero_config"] = dict(self.net.config)

    # ------------------------------------------------------------------------------------------------ optimiser
    def configure_optimizers(self) -> dict[str, Any]:
        parameters = [parameter for parameter in self.parameters() if parameter.requires_grad]
        return plateau_optimizers(parameters, self.optimizer_factory, self.scheduler_factory, torch.optim.Adam)
