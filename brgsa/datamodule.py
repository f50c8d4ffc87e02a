"""The DataModule BrgSA trains with: volume-report pairs for training, a labelled zero-shot set for validation.

Training batches come from :class:`datasets.volume_datamodule.VolumeReportDataModule` (``image`` + ``text``, the
report or its sentence list). Validation and test batches are ``image`` + ``label`` (B, C), NaN = unlabelled, in the
order of :attr:`BrgSADataModule.val_prompts`, from one of:

* ``val_labels``: a CT-RATE-format label CSV holding (at least) the volumes of the split file's ``val`` split, e.g.
  CT-RATE's ``train_predicted_labels.csv`` for a patient-disjoint part of CT-RATE's training set; only the ``val``
  volumes are used, so validation is patient-disjoint from training by construction (the split file is checked);
* ``val_benchmark`` + ``val_data_root``: a registered benchmark, used whole (do not pass a test set here).

The validation prompts (one per class, ``prompt_file`` or the benchmark's) are linked to ``model.val_prompts`` by the
``brgsa`` LightningCLI.

``shuffle_reports=True`` permutes the training texts across volumes (a seeded permutation, fixed for the run): the
control run of ``brgsa demo``, which must not learn anything that transfers to zero-shot classification.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import lightning as L
import numpy as np
from torch.utils.data import DataLoader

from datasets.benchmarks import load_benchmark, read_prompt_file
from datasets.ct_pipeline import CTVolumePreprocessing
from datasets.errors import InputError
from datasets.labels.ctrate import CLASSES, join_metadata, read_ctrate_labels, read_ctrate_metadata
from datasets.volume_datamodule import (
    CTVolumeDataset,
    VolumeItem,
    VolumeReportDataModule,
    check_volume_files,
    collate_volumes,
    seed_worker,
)

__all__ = ["BrgSADataModule"]

logger = logging.getLogger(__name__)


class BrgSADataModule(L.LightningDataModule):
    """Volume-report pairs for training and a labelled, patient-disjoint set for zero-shot validation and test.

    Args:
        reports: sentence table or CT-RATE report table of the training pairs (see
            :mod:`datasets.volume_datamodule`).
        volume_root: folder the volumes of ``reports`` (and of ``val_labels``) resolve against.
        split_file: CSV ``VolumeName,split[,patient]`` with ``train``/``val`` rows, patient-disjoint. Defaults to
            None (the report table's own ``split`` column).
        layout: ``"nested"`` (CT-RATE's folders) or ``"flat"``. Defaults to "nested".
        metadata: CT-RATE ``*_metadata.csv`` of the training volumes (spacing, rescale). Defaults to None.
        section: report text of a CT-RATE report table. Defaults to "findings+impression".
        skip_empty_reports: leave out, with a warning counting them, the rows with no text (an empty ``section``, or
            an empty list from ``brgsa summarize --allow-empty``) instead of failing. Defaults to False.
        val_labels: CT-RATE-format label CSV of the ``val`` volumes. Defaults to None.
        val_benchmark: registered benchmark for validation instead of ``val_labels``. Defaults to None.
        val_data_root: ``{data_root}`` of ``val_benchmark``. Defaults to None.
        val_classes: label columns of ``val_labels``, in prompt order. Defaults to None (CT-RATE's 18).
        prompt_file: one prompt line per class of ``val_labels`` (``configs/prompts/ct-rate.txt``). Defaults to None.
        preprocessing: CT preprocessing. Defaults to None (the released :class:`CTVolumePreprocessing`).
        val_crop: ``"center"`` (``crop_size``) or ``"none"`` (full ``size``). Defaults to "center".
        cache_dir: preprocessing cache (fill it with ``brgsa prepare``). Defaults to None.
        shuffle_reports: permute the training texts across volumes (control experiment). Defaults to False.
        batch_size: training batch size. Defaults to 2.
        val_batch_size: validation/test batch size. Defaults to 2.
        num_workers: data-loader worker processes. Defaults to 0.
        seed: seed of shuffling, crops and the text permutation. Defaults to 0.

    Example::

        data = BrgSADataModule("train_reports.csv", "volumes", split_file="split.csv", layout="flat",
                               val_labels="train_predicted_labels.csv", prompt_file="configs/prompts/ct-rate.txt")
        data.val_prompts[:1]  # ['There is Medical material']
    """

    def __init__(
        self,
        reports: str,
        volume_root: str,
        split_file: str | None = None,
        layout: str = "nested",
        metadata: str | None = None,
        section: str = "findings+impression",
        skip_empty_reports: bool = False,
        val_labels: str | None = None,
        val_benchmark: str | None = None,
        val_data_root: str | None = None,
        val_classes: list[str] | None = None,
        prompt_file: str | None = None,
        preprocessing: CTVolumePreprocessing | None = None,
        val_crop: str = "center",
        cache_dir: str | None = None,
        shuffle_reports: bool = False,
        batch_size: int = 2,
        val_batch_size: int = 2,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if val_labels is not None and val_benchmark is not None:
            raise InputError("give val_labels (with prompt_file) or val_benchmark, not both")
        if val_labels is not None and prompt_file is None:
            raise InputError(f"val_labels {val_labels!r} needs prompt_file, one prompt per label column")
        if val_benchmark is not None and (val_data_root is None or prompt_file is not None):
            raise InputError("val_benchmark needs val_data_root and brings its own prompts (no prompt_file)")
        if val_batch_size < 1:
            raise InputError(f"val_batch_size must be >= 1, got {val_batch_size}")
        self.save_hyperparameters(ignore=["preprocessing"])
        self.pairs = VolumeReportDataModule(
            reports, volume_root, split_file=split_file, layout=layout, metadata=metadata, section=section,
            skip_empty_reports=skip_empty_reports, preprocessing=preprocessing, val_crop=val_crop, cache_dir=cache_dir,
            batch_size=batch_size, num_workers=num_workers, seed=seed,
        )
        self.preprocessing = self.pairs.preprocessing
        self.val_labels = val_labels
        self.val_benchmark = val_benchmark
        self.val_data_root = val_data_root
        self.val_classes = list(val_classes) if val_classes else list(CLASSES)
        self.prompt_file = prompt_file
        self.val_crop = val_crop
        self.shuffle_reports = shuffle_reports
        self.val_batch_size = val_batch_size
        self.seed = seed
        self.train_dataset: CTVolumeDataset | None = None
        self.val_dataset: CTVolumeDataset | None = None
        self._val_prompts: list[str] | None = None

    @property
    def val_prompts(self) -> list[str] | None:
        """One prompt per validation label column, in column order; None without a validation set.

        Raises:
            InputError: the prompt line count differs from the class count, or a class has several prompts.
        """
        if self._val_prompts is not None or (self.val_labels is None and self.val_benchmark is None):
            return self._val_prompts
        if self.val_benchmark is not None:
            bench = load_benchmark(self.val_benchmark, self.val_data_root)
            prompts, classes, source = bench.prompts, bench.class_names, f"benchmark {self.val_benchmark}"
        else:
            prompts, classes, source = read_prompt_file(self.prompt_file), self.val_classes, self.prompt_file
        if len(prompts) != len(classes):
            raise InputError(f"{source}: {len(prompts)} prompt lines for the {len(classes)} label columns {classes}")
        several = [name for name, texts in zip(classes, prompts) if len(texts) != 1]
        if several:
            raise InputError(f"{source}: validation takes one prompt per class; {several} have several")
        self._val_prompts = [texts[0] for texts in prompts]
        return self._val_prompts

    def _val_items(self, val_names: list[str]) -> list[VolumeItem]:
        if self.val_benchmark is not None:
            bench = load_benchmark(self.val_benchmark, self.val_data_root)
            labels, root = bench.labels, bench.image_root
        else:
            labels = read_ctrate_labels(self.val_labels, self.val_classes, self.pairs.layout)
            split_source = self.pairs.split_file or self.pairs.reports
            if not val_names:
                raise InputError(f"{split_source}: no row has split 'val' to validate on with {self.val_labels}")
            labels = labels.select_images(val_names, f"the 'val' split of {split_source}")
            if self.pairs.metadata:
                labels = join_metadata(labels, read_ctrate_metadata(self.pairs.metadata), self.pairs.metadata)
            root = Path(self.pairs.volume_root)
        return [
            VolumeItem(root / relpath, name, meta["row"], Path(labels.source), meta.get("geometry"), None, label)
            for name, relpath, label, meta in zip(labels.image_ids, labels.image_relpaths, labels.labels, labels.meta)
        ]

    def setup(self, stage: str | None = None) -> None:
        """Build the training pairs (``fit``) and the labelled validation set, checking every volume file.

        Raises:
            InputError: a bad table, a validation volume absent from ``val_labels``, or a missing or 2D volume.
        """
        self.pairs.setup("fit" if stage in (None, "fit") else stage)
        train = self.pairs.datasets["train"]
        if self.shuffle_reports:
            order = np.random.default_rng(self.seed).permutation(len(train.items))
            texts = [train.items[i].text for i in order]
            train.items = [dataclasses.replace(item, text=text) for item, text in zip(train.items, texts)]
            logger.info("control run: %d training texts permuted across volumes", len(texts))
        self.train_dataset = train
        if self.val_labels is None and self.val_benchmark is None:
            return
        items = self._val_items([item.name for item in self.pairs.datasets["val"].items])
        check_volume_files(items)
        self.val_dataset = CTVolumeDataset(items, self.preprocessing, self.val_crop, self.pairs.cache_dir, self.seed)
        logger.info("zero-shot validation: %d labelled volumes", len(items))

    def train_dataloader(self) -> DataLoader:
        return self.pairs.train_dataloader()

    def _eval_loader(self) -> DataLoader | list:
        if self.val_dataset is None:
            return []
        return DataLoader(self.val_dataset, batch_size=self.val_batch_size, shuffle=False,
                          num_workers=self.pairs.num_workers, collate_fn=collate_volumes, worker_init_fn=seed_worker)

    def val_dataloader(self) -> DataLoader | list:
        """The labelled validation set, or an empty list (validation skipped) without one."""
        return self._eval_loader()

    def test_dataloader(self) -> DataLoader | list:
        return self._eval_loader()
