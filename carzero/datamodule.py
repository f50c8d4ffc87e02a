"""The DataModule CARZero trains with: image-report pairs for training, a zero-shot label set for validation/test.

It composes :class:`datasets.pairs_datamodule.ImageReportDataModule` (training batches ``image`` + ``text``) and
:class:`datasets.zeroshot_datamodule.ZeroShotDataModule` (validation/test batches ``image`` + ``label`` (B, C), NaN =
unlabelled), with one image preprocessing for both. The class prompts of the validation label set are exposed as
:attr:`CARZeroDataModule.val_prompts` (one per label column), which the ``carzero`` LightningCLI links to
``model.val_prompts``.

``shuffle_reports=True`` permutes the training reports across images (a seeded permutation, fixed for the run): the
control run of ``carzero demo``, which must not learn anything that transfers to zero-shot classification.
"""

from __future__ import annotations

import logging

import lightning as L
import numpy as np
from torch.utils.data import DataLoader

from datasets.benchmarks import read_prompt_file
from datasets.cxr_transforms import CARZERO_MEAN, CARZERO_STD, CXRPreprocessing
from datasets.errors import InputError
from datasets.pairs_datamodule import CXRDataset, ImageReportDataModule, check_image_files
from datasets.reports import ReportSet, read_pairs_manifest
from datasets.zeroshot_datamodule import ZeroShotDataModule

__all__ = ["CARZeroDataModule"]

logger = logging.getLogger(__name__)


class CARZeroDataModule(L.LightningDataModule):
    """Image-report pairs (``pairs-1`` manifest) for training and a labelled set for zero-shot validation and test.

    Args:
        manifest: ``pairs-1`` CSV of the training pairs (see :mod:`datasets.reports`).
        image_root: folder the manifest's image paths are relative to. Defaults to None (the manifest's folder).
        section: report text, ``"findings"``, ``"impression"`` or ``"findings+impression"``. Defaults to
            ``"findings+impression"``.
        train_split: ``split`` value of the training rows. Defaults to ``"train"``.
        val_benchmark: registered zero-shot benchmark for validation/test (``configs/benchmarks/<name>.yaml``); its
            prompts become :attr:`val_prompts`. Defaults to None.
        val_data_root: ``{data_root}`` of ``val_benchmark``. Defaults to None.
        val_labels: label table instead of a benchmark. Defaults to None.
        val_adapter: adapter of ``val_labels`` (:data:`datasets.benchmarks.ADAPTERS`). Defaults to
            ``"chestxray14.data_entry"``.
        val_image_root: folder the ids of ``val_labels`` are relative to. Defaults to None.
        val_split_list: image list selecting the validation images of ``val_labels``. Defaults to None.
        prompt_file: prompt file for ``val_labels``: one line per class of the table (``#`` comments skipped).
            Defaults to None.
        val_check_counts: check the benchmark's expected image/class counts. Defaults to True.
        image_size: side of the square model input. Defaults to 224.
        channels: image channels. Defaults to 3.
        mean: normalisation mean. Defaults to 0.4978 (CARZero).
        std: normalisation standard deviation. Defaults to 0.2449 (CARZero).
        rotate_deg: training augmentation, maximum rotation. Defaults to 0.0.
        translate: training augmentation, maximum shift (fraction of the side). Defaults to 0.0.
        scale: training augmentation, maximum relative zoom. Defaults to 0.0.
        intensity_jitter: training augmentation, contrast/brightness strength. Defaults to 0.0.
        resize, load_size, intensity: image geometry and intensity scaling, for training and validation alike
            (:class:`~datasets.cxr_transforms.CXRPreprocessing`; ``pad_crop`` / 256 / ``range`` is the released
            pipeline). Default to ``"stretch"``, 256 and ``"minmax"``.
        shuffle_reports: permute the training reports across images (control experiment). Defaults to False.
        text_sampling: ``"report"`` (the whole section per image) or ``"sentence"`` (one random sentence of it per
            step, as CARZero's training; with ``carzero align-prompts`` output appended, the pool holds the report's
            sentences and its "There is <finding>" sentences). Defaults to ``"report"``.
        skip_empty_reports: leave out, with a warning counting them, the training rows whose ``section`` is empty
            (e.g. MIMIC-CXR reports without IMPRESSION) instead of failing. Defaults to False.
        views: keep only the training rows whose ``view`` is one of these (e.g. ``["PA", "AP"]``: frontal views, as
            CARZero trains); the others are counted in a log line. Defaults to None (every row).
        batch_size: training batch size. Defaults to 32.
        val_batch_size: validation/test batch size. Defaults to 64.
        num_workers: DataLoader worker processes. Defaults to 0.
        seed: seed of shuffling, augmentation and the report permutation. Defaults to 0.

    Example::

        data = CARZeroDataModule("synthetic-cxr/reports.csv", val_benchmark="synthetic-cxr", val_data_root=".",
                                 image_size=128)
        data.val_prompts[:1]  # ['There is Atelectasis']
    """

    def __init__(
        self,
        manifest: str,
        image_root: str | None = None,
        section: str = "findings+impression",
        train_split: str = "train",
        val_benchmark: str | None = None,
        val_data_root: str | None = None,
        val_labels: str | None = None,
        val_adapter: str = "chestxray14.data_entry",
        val_image_root: str | None = None,
        val_split_list: str | None = None,
        prompt_file: str | None = None,
        val_check_counts: bool = True,
        image_size: int = 224,
        channels: int = 3,
        mean: float = CARZERO_MEAN,
        std: float = CARZERO_STD,
        rotate_deg: float = 0.0,
        translate: float = 0.0,
        scale: float = 0.0,
        intensity_jitter: float = 0.0,
        resize: str = "stretch",
        load_size: int = 256,
        intensity: str = "minmax",
        shuffle_reports: bool = False,
        text_sampling: str = "report",
        skip_empty_reports: bool = False,
        views: list[str] | None = None,
        batch_size: int = 32,
        val_batch_size: int = 64,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if val_labels is not None and prompt_file is None:
            raise InputError(f"val_labels {val_labels!r} needs prompt_file, one prompt per label column")
        if val_benchmark is not None and prompt_file is not None:
            raise InputError("val_benchmark brings its own prompts; give prompt_file only with val_labels")
        self.save_hyperparameters()
        self.pairs = ImageReportDataModule(
            manifest, image_root=image_root, section=section, train_split=train_split, image_size=image_size,
            channels=channels, mean=mean, std=std, rotate_deg=rotate_deg, translate=translate, scale=scale,
            intensity_jitter=intensity_jitter, resize=resize, load_size=load_size, intensity=intensity,
            batch_size=batch_size, num_workers=num_workers, seed=seed,
            text_sampling=text_sampling, skip_empty_reports=skip_empty_reports,
        )
        self.zeroshot = ZeroShotDataModule(
            benchmark=val_benchmark, data_root=val_data_root, labels=val_labels, adapter=val_adapter,
            image_root=val_image_root, split_list=val_split_list, check_counts=val_check_counts,
            image_size=image_size, channels=channels, mean=mean, std=std, resize=resize, load_size=load_size,
            intensity=intensity, batch_size=val_batch_size,
            num_workers=num_workers, seed=seed,
        )
        if views is not None and not views:
            raise InputError("views is an empty list; give the view values to keep (e.g. [PA, AP]) or leave it out")
        self.views = views
        self.prompt_file = prompt_file
        self.shuffle_reports = shuffle_reports
        self.seed = seed
        self._val_prompts: list[str] | None = None

    @property
    def preprocessing(self) -> CXRPreprocessing:
        """The evaluation preprocessing (no augmentation): what a model folder stores."""
        return self.zeroshot.preprocessing

    @property
    def class_names(self) -> list[str]:
        """Label columns of the validation set."""
        return self.zeroshot.class_names

    @property
    def val_prompts(self) -> list[str]:
        """One prompt per validation label column, in column order.

        Raises:
            InputError: the prompt file's line count differs from the class count, or a class has several prompts.
        """
        if self._val_prompts is not None:
            return self._val_prompts
        classes = self.zeroshot.class_names  # reads the label table (and the benchmark's prompts)
        if self.prompt_file is not None:
            prompts = read_prompt_file(self.prompt_file)
            source = self.prompt_file
        else:
            prompts = self.zeroshot.prompts or []
            source = f"benchmark {self.hparams.val_benchmark}"
        if len(prompts) != len(classes):
            raise InputError(f"{source}: {len(prompts)} prompt lines for the {len(classes)} label columns {classes}")
        several = [name for name, texts in zip(classes, prompts) if len(texts) != 1]
        if several:
            raise InputError(f"{source}: CARZero validation takes one prompt per class; {several} have several")
        self._val_prompts = [texts[0] for texts in prompts]
        return self._val_prompts

    def setup(self, stage: str | None = None) -> None:
        """Build the training pairs (``fit``) and the zero-shot set (every stage), checking that every image exists.

        Raises:
            InputError: a bad manifest or label table, or images absent from their folders (named in the message).
        """
        if stage in (None, "fit"):
            reports = read_pairs_manifest(self.pairs.manifest, section=self.pairs.section, on_empty=self.pairs.on_empty)
            train = reports.split(self.pairs.splits["train"])
            if self.views is not None:
                train = self._keep_views(train)
            paths = [self.pairs.image_root / relpath for relpath in train.image_relpaths]
            check_image_files(train.image_ids, paths, f"the manifest {self.pairs.manifest}", self.pairs.image_root)
            texts = list(train.texts)
            if self.shuffle_reports:
                order = np.random.default_rng(self.seed).permutation(len(texts))
                texts = [texts[i] for i in order]
                logger.info("control run: %d training reports permuted across images", len(texts))
            meta = [{"image_id": image_id, **row} for image_id, row in zip(train.image_ids, train.meta)]
            self.pairs.datasets["train"] = CXRDataset(
                paths, self.pairs.preprocessing, texts=texts, meta=meta, augment=True, seed=self.seed,
                sample_sentence=self.pairs.text_sampling == "sentence",
            )
        self.zeroshot.setup(stage)

    def _keep_views(self, train: ReportSet) -> ReportSet:
        """The training rows of the chosen views (see ``views``).

        Raises:
            InputError: no training row has one of those views (the message lists the views present).
        """
        keep = [i for i, meta in enumerate(train.meta) if meta.get("view") in self.views]
        if not keep:
            present = sorted({meta.get("view", "") for meta in train.meta})
            raise InputError(f"{train.source}: no training row has a view in {self.views}; the views present are "
                             f"{present}")
        logger.info("views %s: %d of %d training rows kept", self.views, len(keep), len(train))
        return train.subset(keep)

    def train_dataloader(self) -> DataLoader:
        return self.pairs.train_dataloader()

    def val_dataloader(self) -> DataLoader:
        return self.zeroshot.val_dataloader()

    def test_dataloader(self) -> DataLoader:
        return self.zeroshot.test_dataloader()
