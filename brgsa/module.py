"""The LightningModule that trains BrgSA contrastively and validates it by zero-shot AUROC.

Batches (volumes in MONAI's channel-first ``(B, 1, X, Y, Z)`` layout, Z the slice axis):

* training: ``{"image": (B, 1, X, Y, Z) float, "text": texts}``. ``texts`` is either ``list[str]`` (one text per
  volume, used as given) or ``list[list[str]]`` (the summary sentences of each volume's report): then, as in the
  released training, ``sentences_per_sample`` sentences are drawn at random without replacement (a generator seeded
  with ``sampling_seed + global_rank``) and joined with spaces; a report with fewer sentences uses all of them. Lists
  of lists must reach the module unchanged, so the data loader needs a collate that keeps per-sample lists (PyTorch's
  default collate transposes them).
* validation: ``{"image": ..., "label": (B, C)}`` with 1/0 and NaN for "not labelled", columns in the order of
  ``val_prompts``; scored with the paper's ``(cos(v, t) + cos(v_hat, t)) / 2`` and evaluated with
  :func:`datasets.metrics.evaluate_multilabel` (logged ``val/macro_auroc``). A ``"text"`` entry, when present, also
  gives ``val/loss`` (sentence lists use their first ``sentences_per_sample`` sentences). Use a patient-disjoint part
  of the training set: the released code selected checkpoints on the test split.

Multi-process training: each process gathers the embeddings of all processes with ``self.all_gather(...,
sync_grads=True)`` and scores its own rows against all of them (labels offset by rank), so the contrastive softmax
spans the global batch. This needs the same ``B`` on every process (``drop_last=True``). With one process nothing is
gathered.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable

from brgsa.losses import BrgSALoss
from brgsa.model import BrgSA, BrgSAOutput, zero_shot_scores
from datasets.zeroshot_training import log_zero_shot_auroc, plateau_optimizers

__all__ = ["BrgSAModule"]



class BrgSAModule(LightningModule):
    """Trains a :class:`~brgsa.model.BrgSA` network with the three-term BrgSA loss.

    Args:
        net: the model.
        loss: the loss. Defaults to None: :class:`~brgsa.losses.BrgSALoss` with the released weights 1 / 0.5 / 1 and
            logit scale 10. Without a knowledge bank (``net.use_knowledge_bank`` False) only the raw InfoNCE term
            is used.
        optimizer: optimizer factory. Defaults to None: AdamW (lr 5e-5, betas (0.5, 0.999), weight decay 1e-6),
            the paper's settings; the released code used Adam, which differs only by the tiny decoupled decay.
        scheduler: learning-rate scheduler factory, stepped each epoch on ``val/macro_auroc``. Defaults to None:
            ReduceLROnPlateau (factor 0.5, patience 5, mode "max"); the released code monitored a validation loss.
        val_prompts: one zero-shot prompt per label column of the validation set, e.g.
            ``["There is Emphysema", "There is Atelectasis"]``. Defaults to None (no zero-shot validation).
        sentences_per_sample: sentences drawn per volume when ``text`` holds sentence lists. Defaults to 5.
        sampling_seed: seed of the sentence sampling. Defaults to 0.
        sentence_combination: how the drawn sentences become one text embedding: ``"join"`` (one string, encoded
            together, as the released code) or ``"mean"`` (each sentence encoded alone, the vectors averaged;
            :meth:`brgsa.model.BrgSA.encode_sentence_sets`). With a frozen text encoder ``"mean"`` encodes each
            distinct sentence once, where ``"join"`` runs the encoder on a new string every step: the CPU demo uses
            it. Defaults to ``"join"``.
    """

    def __init__(
        self,
        net: BrgSA,
        loss: BrgSALoss | None = None,
        optimizer: OptimizerCallable | None = None,
        scheduler: LRSchedulerCallable | None = None,
        val_prompts: list[str] | None = None,
        sentences_per_sample: int = 5,
        sampling_seed: int = 0,
        sentence_combination: str = "join",
    ) -> None:
        super().__init__()
        if val_prompts is not None and (not val_prompts or not all(isinstance(p, str) for p in val_prompts)):
            raise ValueError(f"val_prompts must be a non-empty list of strings, got {val_prompts!r}")
        if sentences_per_sample < 1:
            raise ValueError(f"sentences_per_sample must be at least 1, got {sentences_per_sample}")
        if sentence_combination not in ("join", "mean"):
            raise ValueError(f"sentence_combination must be 'join' or 'mean', got {sentence_combination!r}")
        self.save_hyperparameters(ignore=["net", "loss"])
        self.net = net
        self.loss = loss if loss is not None else BrgSALoss()
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.val_prompts = list(val_prompts) if val_prompts is not None else None
        self.sentences_per_sample = sentences_per_sample
        self.sampling_seed = sampling_seed
        self.sentence_combination = sentence_combination
        self._sentence_generator = torch.Generator().manual_seed(sampling_seed)
        self._val_prompt_embeds: torch.Tensor | None = None
        self._val_scores: list[torch.Tensor] = []
        self._val_labels: list[torch.Tensor] = []

    # ------------------------------------------------------------------------------------------------ texts
    def on_fit_start(self) -> None:
        self._sentence_generator.manual_seed(self.sampling_seed + self.global_rank)

    def select_texts(
        self, texts: Sequence[str] | Sequence[Sequence[str]], sample: bool
    ) -> list[str] | list[list[str]]:
        """One text per volume from a batch's ``text`` entry.

        Args:
            texts: B strings, or B lists of sentences.
            sample: draw ``sentences_per_sample`` sentences at random (training); otherwise take the first ones.

        Returns:
            B strings (the drawn sentences joined), or with ``sentence_combination="mean"`` and sentence lists, B lists
            of the drawn sentences.

        Raises:
            ValueError: ``texts`` is a single string, or a sentence list is empty (the message names its position).
        """
        if isinstance(texts, str):
            raise ValueError(f"text must be a list with one entry per volume, got a single string {texts!r:.80}")
        selected = []
        for position, entry in enumerate(texts):
            if isinstance(entry, str):
                selected.append([entry] if self.sentence_combination == "mean" else entry)
                continue
            sentences = list(entry)
            if not sentences:
                raise ValueError(f"text[{position}] is an empty sentence list; every volume needs a sentence")
            if sample and len(sentences) > self.sentences_per_sample:
                order = torch.randperm(len(sentences), generator=self._sentence_generator)
                sentences = [sentences[i] for i in order[: self.sentences_per_sample].tolist()]
            drawn = sentences[: self.sentences_per_sample]
            selected.append(drawn if self.sentence_combination == "mean" else " ".join(drawn))
        return selected

    # ------------------------------------------------------------------------------------------------ training
    def _world_size(self) -> int:
        return self.trainer.world_size if self._trainer is not None else 1

    def _loss(self, output: BrgSAOutput) -> dict[str, torch.Tensor]:
        embeds = {"image_embeds": output.image_embeds, "text_embeds": output.text_embeds}
        if self.net.use_knowledge_bank:
            embeds.update(image_embeds_hat=output.image_embeds_hat, text_embeds_hat=output.text_embeds_hat)
        gathered = None
        if self._world_size() > 1:
            gathered = {name: self.all_gather(value, sync_grads=True).flatten(0, 1) for name, value in embeds.items()}
        return self.loss(**embeds, gathered=gathered, rank=self.global_rank if gathered else 0)

    def _check_batch(self, images: torch.Tensor, texts: Sequence[Any]) -> None:
        if isinstance(texts, str) or len(texts) != images.shape[0]:
            raise ValueError(
                f"a batch needs one text entry per volume: got {images.shape[0]} volumes and "
                f"{1 if isinstance(texts, str) else len(texts)} text entries"
            )

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        images, texts = batch["image"], batch["text"]
        self._check_batch(images, texts)
        losses = self._loss(self.net(images, self.select_texts(texts, sample=True)))
        for name, value in losses.items():
            self.log(f"train/{name}", value, prog_bar=name == "loss", batch_size=images.shape[0])
        return losses["loss"]

    # ---------------------------------------------------------------------------------------------- validation
    def on_validation_epoch_start(self) -> None:
        self._val_scores, self._val_labels = [], []
        if self.val_prompts is not None:
            with torch.no_grad():
                self._val_prompt_embeds = self.net.encode_texts(self.val_prompts)[0]  # (C, E)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        images = batch["image"]
        if "text" in batch:
            self._check_batch(images, batch["text"])
            output = self.net(images, self.select_texts(batch["text"], sample=False))
            image_embeds, image_embeds_hat = output.image_embeds, output.image_embeds_hat
            for name, value in self._loss(output).items():
                self.log(f"val/{name}", value, sync_dist=True, batch_size=images.shape[0])
        else:
            image_embeds, image_embeds_hat = self.net.encode_volumes(images)
        if self._val_prompt_embeds is None:
            return
        if "label" not in batch:
            raise ValueError("zero-shot validation needs a 'label' entry (B, C) in each validation batch")
        labels = batch["label"]
        if labels.ndim != 2 or labels.shape[1] != len(self.val_prompts):
            raise ValueError(
                f"validation labels must be (B, {len(self.val_prompts)}), one column per prompt, got "
                f"{tuple(labels.shape)}"
            )
        scores = zero_shot_scores(image_embeds, image_embeds_hat, self._val_prompt_embeds)  # (B, C)
        self._val_scores.append(scores.float())
        self._val_labels.append(labels.float())

    def on_validation_epoch_end(self) -> None:
        log_zero_shot_auroc(self, self._val_scores, self._val_labels, self.val_prompts or [])
        self._val_scores, self._val_labels, self._val_prompt_embeds = [], [], None

    # ----------------------------------------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store ``net.config`` under ``"brgsa_config"``: any checkpoint, CLI or not, rebuilds ``net``."""
        checkpoint["brgsa_config"] = dict(self.net.config)

    # ------------------------------------------------------------------------------------------------ optimiser
    def configure_optimizers(self) -> dict[str, Any]:
        parameters = [parameter for parameter in self.parameters() if parameter.requires_grad]
        return plateau_optimizers(parameters, self.optimizer_factory, self.scheduler_factory, torch.optim.AdamW)
