"""LightningDataModule of 2D image-report pairs from a ``pairs-1`` manifest (MIMIC-CXR style, or synthetic-cxr).

Also the radiograph dataset, collate function and worker seeding shared with
:mod:`datasets.zeroshot_datamodule`.
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info

from datasets.cxr import read_cxr
from datasets.cxr_transforms import CARZERO_MEAN, CARZERO_STD, CXRPreprocessing
from datasets.errors import InputError
from datasets.labels.base import missing_ids_message
from datasets.report_text.sentences import split_sentences
from datasets.reports import ReportSet, read_pairs_manifest

TEXT_SAMPLING = ("report", "sentence")

__all__ = [
    "TEXT_SAMPLING",
    "CXRDataset",
    "ImageReportDataModule",
    "check_image_files",
    "check_loader_options",
    "collate_cxr",
    "make_loader",
    "seed_cxr_worker",
]


class CXRDataset(Dataset):
    """Radiographs with a report text or a label vector each.

    Args:
        paths: image files (PNG, JPEG or DICOM, read by :func:`datasets.cxr.read_cxr`).
        preprocessing: the input pipeline.
        texts: one report per image, or None. Defaults to None.
        labels: float32 ``(N, C)`` label matrix (NaN = not labelled), or None. Defaults to None.
        meta: one dict per image. Defaults to None (``{"image": str(path)}``).
        augment: apply the training augmentation of ``preprocessing``. Defaults to False.
        seed: seed of the augmentation generator (re-seeded per worker by :func:`seed_cxr_worker`). Defaults to 0.
        sample_sentence: serve one random sentence of each text (split by
            :func:`datasets.report_text.sentences.split_sentences`) per draw instead of the whole text, as CARZero
            trains. Defaults to False.
    """

    def __init__(
        self,
        paths: Sequence[Path],
        preprocessing: CXRPreprocessing,
        texts: Sequence[str] | None = None,
        labels: np.ndarray | None = None,
        meta: Sequence[dict[str, Any]] | None = None,
        augment: bool = False,
        seed: int = 0,
        sample_sentence: bool = False,
    ) -> None:
        self.paths = list(paths)
        self.preprocessing = preprocessing
        self.texts = list(texts) if texts is not None else None
        self.sentences: list[list[str]] | None = None
        if sample_sentence:
            if self.texts is None:
                raise ValueError("sample_sentence needs texts")
            self.sentences = [split_sentences(text) or [text] for text in self.texts]
        self.labels = None if labels is None else torch.as_tensor(np.asarray(labels, dtype=np.float32))
        self.meta = list(meta) if meta is not None else [{"image": str(path)} for path in self.paths]
        self.augment = augment
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def distinct_texts(self) -> list[str]:
        """Every text a draw can serve (the sentences when sampling sentences), each once, in first-seen order."""
        pools = self.sentences if self.sentences is not None else [[text] for text in self.texts or []]
        return list(dict.fromkeys(text for pool in pools for text in pool))

    def _text(self, index: int) -> str | None:
        if self.sentences is not None:
            pool = self.sentences[index]
            return pool[int(torch.randint(len(pool), (), generator=self.generator))]
        return self.texts[index] if self.texts is not None else None

    def __getitem__(self, index: int) -> dict[str, Any]:
        xray = read_cxr(self.paths[index])  # array (H, W)
        image = self.preprocessing(xray.array, self.generator if self.augment else None,
                                   value_range=xray.meta["value_range"])  # (C, S, S)
        return {
            "image": image,
            "text": self._text(index),
            "label": self.labels[index] if self.labels is not None else None,
            "meta": self.meta[index],
        }


def collate_cxr(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Batch samples: ``image`` float32 (B, C, H, W); ``label`` float32 (B, K) when present, else absent; ``text``
    list[str] when present, else absent; ``meta`` list[dict]."""
    batch: dict[str, Any] = {"image": torch.stack([s["image"] for s in samples]), "meta": [s["meta"] for s in samples]}
    if samples[0]["text"] is not None:
        batch["text"] = [s["text"] for s in samples]
    if samples[0]["label"] is not None:
        batch["label"] = torch.stack([s["label"] for s in samples])
    return batch


def seed_cxr_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: derive the worker's augmentation, NumPy and ``random`` seeds from torch's
    per-worker seed (itself drawn from the loader's seeded generator), so runs are reproducible."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
    info = get_worker_info()
    if info is not None and isinstance(info.dataset, CXRDataset):
        info.dataset.generator.manual_seed(seed)


def check_image_files(ids: Sequence[str], paths: Sequence[Path], listed_in: str, image_root: str | os.PathLike
                      ) -> None:
    """Raise :class:`InputError` naming the folder and the first missing image ids unless every path is a file."""
    absent = [image_id for image_id, path in zip(ids, paths) if not path.is_file()]
    if absent:
        raise InputError(missing_ids_message(absent, listed_in, f"the folder {image_root}"))


def make_loader(dataset: Dataset | None, name: str, batch_size: int, num_workers: int, seed: int,
                shuffle: bool) -> DataLoader:
    """A reproducible DataLoader over ``dataset`` (seeded shuffling and workers)."""
    if dataset is None:
        raise InputError(f"the {name} data is not set up; call setup() with a stage that uses it first")
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers, collate_fn=collate_cxr,
        worker_init_fn=seed_cxr_worker, generator=torch.Generator().manual_seed(seed),
    )


def check_loader_options(batch_size: int, num_workers: int) -> None:
    """Raise :class:`InputError` for a batch size below 1 or a negative worker count."""
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    if num_workers < 0:
        raise InputError(f"num_workers must be >= 0, got {num_workers}")


class ImageReportDataModule(L.LightningDataModule):
    """Image-report pairs from a ``pairs-1`` manifest; the splits come from its ``split`` column.

    Batches are dicts: ``image`` float32 (B, C, H, W) with ``H = W = image_size``, normalised by ``mean``/``std``;
    ``text`` list[str] (the chosen report section); ``meta`` list[dict] (manifest fields, ``image_id``).

    Args:
        manifest: path of the ``pairs-1`` CSV (see :mod:`datasets.reports`).
        image_root: folder the manifest's ``image`` paths are relative to. Defaults to None (the manifest's folder).
        section: report text, ``"findings"``, ``"impression"`` or ``"findings+impression"``. Defaults to
            ``"findings+impression"``.
        train_split: ``split`` value of training rows. Defaults to ``"train"``.
        val_split: ``split`` value of validation rows (MIMIC-CXR: ``"validate"``). Defaults to ``"val"``.
        test_split: ``split`` value of test rows. Defaults to ``"test"``.
        image_size: side of the square model input. Defaults to 224.
        channels: image channels ``C``. Defaults to 3.
        mean: normalisation mean. Defaults to 0.4978 (CARZero).
        std: normalisation standard deviation. Defaults to 0.2449 (CARZero).
        rotate_deg: training augmentation: maximum rotation in degrees. Defaults to 0.0 (off).
        translate: training augmentation: maximum shift, fraction of the side. Defaults to 0.0 (off).
        scale: training augmentation: maximum relative zoom. Defaults to 0.0 (off).
        intensity_jitter: training augmentation: contrast/brightness strength. Defaults to 0.0 (off).
        resize: ``"stretch"`` (square resize) or ``"pad_crop"`` (CARZero's release: longest side to ``load_size``,
            zero pad, centre crop for evaluation and random crop for training; see
            :mod:`datasets.cxr_transforms`). Defaults to ``"stretch"``.
        load_size: padded square side of ``"pad_crop"``. Defaults to 256.
        intensity: ``"minmax"`` (per image) or ``"range"`` (the file's nominal bit range, as the release's 8-bit
            reader). Defaults to ``"minmax"``.
        batch_size: samples per batch. Defaults to 32.
        num_workers: DataLoader worker processes. Defaults to 0.
        seed: seed of shuffling and augmentation. Defaults to 0.
        text_sampling: training text of an image: ``"report"`` (the whole section) or ``"sentence"`` (one random
            sentence of it per step, as CARZero). Defaults to ``"report"``.
        skip_empty_reports: leave out, with a warning counting them, the rows whose ``section`` is empty (e.g.
            MIMIC-CXR reports without IMPRESSION) instead of failing. Defaults to False.

    Example::

        data = ImageReportDataModule("synthetic-cxr/reports.csv", image_size=96, batch_size=4)
        data.setup("fit")
        batch = next(iter(data.train_dataloader()))
        batch["image"].shape  # torch.Size([4, 3, 96, 96])
    """

    def __init__(
        self,
        manifest: str,
        image_root: str | None = None,
        section: str = "findings+impression",
        train_split: str = "train",
        val_split: str = "val",
        test_split: str = "test",
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
        batch_size: int = 32,
        num_workers: int = 0,
        seed: int = 0,
        text_sampling: str = "report",
        skip_empty_reports: bool = False,
    ) -> None:
        super().__init__()
        check_loader_options(batch_size, num_workers)
        if text_sampling not in TEXT_SAMPLING:
            raise InputError(f"text_sampling must be one of {TEXT_SAMPLING}, got {text_sampling!r}")
        self.save_hyperparameters()
        self.manifest = manifest
        self.image_root = Path(image_root) if image_root is not None else Path(manifest).parent
        self.section = section
        self.on_empty = "skip" if skip_empty_reports else "error"
        self.splits = {"train": train_split, "val": val_split, "test": test_split}
        self.preprocessing = CXRPreprocessing(image_size, channels, mean, std, rotate_deg, translate, scale,
                                              intensity_jitter, resize=resize, load_size=load_size,
                                              intensity=intensity)
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.text_sampling = text_sampling
        self.datasets: dict[str, CXRDataset] = {}

    def _dataset(self, reports: ReportSet, role: str) -> CXRDataset:
        part = reports.split(self.splits[role])
        paths = [self.image_root / relpath for relpath in part.image_relpaths]
        check_image_files(part.image_ids, paths, f"the manifest {self.manifest}", self.image_root)
        meta = [{"image_id": image_id, **row} for image_id, row in zip(part.image_ids, part.meta)]
        return CXRDataset(paths, self.preprocessing, texts=part.texts, meta=meta, augment=role == "train",
                          seed=self.seed, sample_sentence=role == "train" and self.text_sampling == "sentence")

    def setup(self, stage: str | None = None) -> None:
        """Read the manifest and build the datasets of ``stage``, checking that every image exists.

        Raises:
            InputError: an invalid manifest, a split with no rows, or images absent from ``image_root`` (the message
                names the folder and lists the first missing ids).
        """
        reports = read_pairs_manifest(self.manifest, section=self.section, on_empty=self.on_empty)
        roles = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}
        for role in roles.get(stage, ("train", "val", "test")):
            self.datasets[role] = self._dataset(reports, role)

    def train_dataloader(self) -> DataLoader:
        return make_loader(self.datasets.get("train"), "train", self.batch_size, self.num_workers, self.seed, True)

    def val_dataloader(self) -> DataLoader:
        return make_loader(self.datasets.get("val"), "val", self.batch_size, self.num_workers, self.seed, False)

    def test_dataloader(self) -> DataLoader:
        return make_loader(self.datasets.get("test"), "test", self.batch_size, self.num_workers, self.seed, False)
