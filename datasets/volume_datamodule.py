"""LightningDataModules for 3D CT: volume-report pairs (BrgSA training) and zero-shot volume label sets.

Both stream: a dataset holds only paths, keys, texts and label rows; each item is read from the preprocessing cache
(or computed and cached) when it is requested (:func:`datasets.ct_pipeline.load_preprocessed`), so memory does not
grow with the number of volumes. Run ``brgsa prepare`` first to fill the cache in parallel.

**Sentence table** (``VolumeReportDataModule(reports=...)``, a CSV chosen for medvl; BrgSA's training pairs each
volume with a list of short LLM-summarised sentences):

=============  ==================================================================================================
``VolumeName``  volume key, e.g. ``train_1_a_1.nii.gz`` (CT-RATE naming, or any file name with ``layout="flat"``)
``sentences``   a JSON list of non-empty strings, e.g. ``["There is emphysema.", "No pleural effusion."]``
``split``       optional: ``train`` or ``val`` (other values, e.g. ``test``, are not used)
``path``        optional: the volume path relative to ``volume_root`` (default: from ``VolumeName`` and ``layout``)
=============  ==================================================================================================

A CT-RATE report table (``train_reports.csv``, columns ``VolumeName``, ``Findings_EN``, ``Impressions_EN``, ...)
is read with :func:`datasets.reports.read_ctrate_reports` instead; the table kind is recognised from its header.

**Split file** (``split_file=``): a CSV with ``VolumeName`` and ``split`` (``train`` / ``val``), optionally
``patient``; volumes of the report table absent from it are not used. Patients must not cross splits (the patient is
the ``patient`` column, else CT-RATE's ``<split>_<n>`` name prefix). CT-RATE ``valid_*`` volumes are the zero-shot
test set and are refused in both splits (the released code selected checkpoints on them).

**One volume per report** (``one_volume_per_report=True``, as the released BrgSA loader): CT-RATE reconstructions of
one scan (``train_1_a_1``, ``train_1_a_2``, ...) share a report; training then serves one item per scan, drawing one
of its reconstructions at random each time, so an epoch is one pass over the reports (not over the about twice as
many volumes) and two reconstructions of a report never meet in a batch as each other's negatives. Names outside
CT-RATE's naming form their own group.
"""

from __future__ import annotations

import json
import logging
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import nibabel as nib
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info

from datasets.cache import PreprocessCache
from datasets.ct_pipeline import CROP_MODES, CTVolumePreprocessing, load_preprocessed, to_model_input
from datasets.errors import InputError
from datasets.labels.base import missing_ids_message, read_csv_table, require_columns, row_list
from datasets.labels.ctrate import CLASSES, CTRateGeometry, join_metadata, read_ctrate_labels, read_ctrate_metadata
from datasets.labels.ctrate import volume_relpath as ctrate_relpath
from datasets.reports import CTRATE_REPORT_COLUMNS, SECTIONS, read_ctrate_reports

__all__ = [
    "SENTENCE_COLUMNS",
    "VolumeItem",
    "CTVolumeDataset",
    "collate_volumes",
    "reconstruction_groups",
    "seed_worker",
    "check_volume_files",
    "read_sentence_table",
    "VolumeReportDataModule",
    "VolumeZeroShotDataModule",
]

logger = logging.getLogger(__name__)

SENTENCE_COLUMNS = ("VolumeName", "sentences")
_SPLITS = ("train", "val")
_NIFTI_SUFFIXES = (".nii", ".nii.gz")
_CTRATE_NAME = re.compile(r"^(?P<patient>(?P<split>[a-z]+)_\d+)_[a-z]+_\d+\.nii(\.gz)?$")
_CTRATE_SCAN = re.compile(r"^(?P<scan>[a-z]+_\d+_[a-z]+)_\d+(\.nii(\.gz)?)?$")
_SHOWN = 5


@dataclass
class VolumeItem:
    """One volume to serve: where it is and what goes with it (no pixel data).

    Attributes:
        path: the NIfTI file or DICOM series folder.
        name: the volume key (``VolumeName``).
        row: spreadsheet row of the table it came from (header = 1).
        source: that table.
        geometry: CT-RATE metadata geometry, or None.
        text: a report (str), a sentence list (list[str]) or None.
        label: float32 (C,) with NaN for unlabelled, or None.
        meta: extra JSON-compatible fields copied into the batch's ``meta``.
        key_column: the table's column holding ``name`` (``NoteAcc_DEID`` for RAD-ChestCT), for messages.
    """

    path: Path
    name: str
    row: int
    source: Path
    geometry: CTRateGeometry | None = None
    text: str | list[str] | None = None
    label: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    key_column: str = "VolumeName"


def check_volume_files(items: Sequence[VolumeItem]) -> None:
    """Eagerly check that every item's volume exists and is 3D (NIfTI headers only; DICOM folders are not opened).

    Raises:
        InputError: the first problems, each naming the table, row, ``VolumeName`` column and the path: a volume
            missing on disk, a NIfTI holding a 2D image, or a single image file where a volume is expected.
    """
    missing = [item for item in items if not item.path.exists()]
    if missing:
        shown = "; ".join(f"row {item.row}: {item.name!r} not found at {item.path}" for item in missing[:_SHOWN])
        more = f" (and {len(missing) - _SHOWN} more)" if len(missing) > _SHOWN else ""
        raise InputError(
            f"{missing[0].source}: column {missing[0].key_column!r}: {len(missing)} volume(s) listed are missing on "
            f"disk: {shown}{more}"
        )
    for item in items:
        if item.path.is_dir():
            continue
        where = f"{item.source}: row {item.row}, column {item.key_column!r} ({item.name!r}): {item.path}"
        if item.path.name.lower().endswith(".npz"):
            from datasets.labels.radchestct import check_volume_archive

            check_volume_archive(item.path, where)
            continue
        if not item.path.name.lower().endswith(_NIFTI_SUFFIXES):
            raise InputError(
                f"{where} is a single image file, expected a 3D volume (a .nii/.nii.gz file, a DICOM series folder "
                "or a RAD-ChestCT .npz archive)"
            )
        try:
            shape = nib.load(item.path).shape
        except Exception as err:  # nibabel raises many types on damaged headers
            raise InputError(f"{where} could not be read as NIfTI: {' '.join(str(err).split())[:200]}") from err
        spatial = tuple(shape[:3]) + (1,) * (3 - len(shape))
        if min(spatial) < 2:
            raise InputError(f"{where} is a 2D image of shape {tuple(shape)}, expected a 3D CT volume")


class CTVolumeDataset(Dataset):
    """Streams volumes through the CT pipeline; holds only :class:`VolumeItem` records.

    Args:
        items: the volumes.
        preprocessing: CT preprocessing.
        crop: ``"random"`` (training), ``"center"`` or ``"none"`` (see :func:`datasets.ct_pipeline.to_model_input`).
            Defaults to "center".
        cache_dir: :class:`~datasets.cache.PreprocessCache` folder. Defaults to None (recomputed every time).
        seed: seed of the random crops (re-seeded per worker by :func:`seed_worker`). Defaults to 0.
        groups: indices into ``items``, one list per dataset item: item ``i`` serves a random member of
            ``groups[i]`` (e.g. :func:`reconstruction_groups`). Defaults to None (one item per volume).

    Items are ``{"image": (1, X, Y, Z) float32, "text", "label": (C,) float32 or None, "meta": dict}``.
    """

    def __init__(
        self,
        items: Sequence[VolumeItem],
        preprocessing: CTVolumePreprocessing,
        crop: str = "center",
        cache_dir: str | None = None,
        seed: int = 0,
        groups: Sequence[Sequence[int]] | None = None,
    ) -> None:
        if crop not in CROP_MODES:
            raise ValueError(f"crop must be one of {CROP_MODES}, got {crop!r}")
        self.items = list(items)
        self.groups = None if groups is None else [list(group) for group in groups]
        if self.groups is not None and sorted(i for group in self.groups for i in group) != list(range(len(items))):
            raise ValueError("groups must hold every item index exactly once")
        self.preprocessing = preprocessing
        self.crop = crop
        self.cache = PreprocessCache(cache_dir) if cache_dir else None
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self.items) if self.groups is None else len(self.groups)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if self.groups is not None:
            members = self.groups[index]
            if len(members) == 1:  # draws nothing, so ungrouped volumes keep the random crops they had without groups
                index = members[0]
            else:
                index = members[int(torch.randint(len(members), (), generator=self.generator))]
        item = self.items[index]
        try:
            hu, meta = load_preprocessed(item.path, self.preprocessing, self.cache, item.geometry)
        except InputError as err:  # found mid-run: say which table row to fix
            raise InputError(f"{err} ({item.source} row {item.row}, VolumeName {item.name!r})") from err
        image = to_model_input(hu, self.preprocessing, self.crop, self.generator)  # (1, X, Y, Z)
        label = None if item.label is None else torch.from_numpy(np.asarray(item.label, dtype=np.float32))
        info = {"VolumeName": item.name, "path": str(item.path), "row": item.row, **item.meta, "affine": meta["affine"]}
        return {"image": image, "text": item.text, "label": label, "meta": info}


def collate_volumes(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Batch samples: ``image`` (B, 1, X, Y, Z) float32; ``text`` a list kept as is (list[str] or list[list[str]]:
    PyTorch's default collate would transpose sentence lists); ``label`` (B, C) float32 when every sample has one;
    ``meta`` list[dict]. Keys whose values are all None (``text`` of a label set) are left out."""
    batch: dict[str, Any] = {"image": torch.stack([sample["image"] for sample in samples])}
    texts = [sample["text"] for sample in samples]
    if any(text is not None for text in texts):
        batch["text"] = texts
    labels = [sample["label"] for sample in samples]
    if any(label is not None for label in labels):
        batch["label"] = torch.stack(labels)
    batch["meta"] = [sample["meta"] for sample in samples]
    return batch


def reconstruction_groups(items: Sequence[VolumeItem]) -> list[list[int]]:
    """Group the reconstructions of one CT-RATE scan (``train_1_a_1``, ``train_1_a_2`` -> ``train_1_a``), which share
    one report; a name outside CT-RATE's naming is a group of its own. Groups keep first-seen order."""
    groups: dict[str | int, list[int]] = {}
    for index, item in enumerate(items):
        match = _CTRATE_SCAN.match(item.name)
        groups.setdefault(match["scan"] if match else index, []).append(index)  # an unmatched name: its index
    return list(groups.values())


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed the worker's crop generator, NumPy and ``random`` from torch's per-worker
    seed (drawn from the loader's seeded generator), so random crops are reproducible with any ``num_workers``."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
    info = get_worker_info()
    if info is not None and isinstance(info.dataset, CTVolumeDataset):
        info.dataset.generator.manual_seed(seed)


def _loader(dataset: CTVolumeDataset, batch_size: int, shuffle: bool, num_workers: int, seed: int) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        collate_fn=collate_volumes,
        worker_init_fn=seed_worker,
        generator=torch.Generator().manual_seed(seed),
        drop_last=shuffle,
        persistent_workers=False,
    )


def _resolve(root: Path, name: str, relpath: str, layout: str, source: Path, row: int) -> Path:
    if relpath:
        return root / relpath
    try:
        return root / ctrate_relpath(name, layout)
    except ValueError as err:
        raise InputError(f"{source}: row {row}, column 'VolumeName': {err}; or set layout='flat'") from err


def _geometry(path: str | None) -> dict[str, CTRateGeometry] | None:
    return read_ctrate_metadata(path) if path else None


def _check_common(batch_size: int, num_workers: int, layout: str) -> None:
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    if num_workers < 0:
        raise InputError(f"num_workers must be >= 0, got {num_workers}")
    if layout not in ("nested", "flat"):
        raise InputError(f"layout must be 'nested' or 'flat', got {layout!r}")


def read_sentence_table(
    path: str | Path, volume_root: str | Path, layout: str = "nested", skip_empty: bool = False
) -> list[VolumeItem]:
    """Read a sentence table (see the module docstring) into items with ``text`` = the sentence list.

    Args:
        skip_empty: leave out rows whose list is empty (``brgsa summarize --allow-empty`` writes them), counted in
            a warning. Defaults to False: an empty list is an error.

    Raises:
        InputError: a missing column, a duplicate ``VolumeName``, a ``sentences`` cell that is not a JSON list of
            non-empty strings (file, row and column named), or no row left.
    """
    path = Path(path)
    header, rows = read_csv_table(path)
    require_columns(path, header, SENTENCE_COLUMNS)
    items, seen, empty = [], {}, []
    for row in rows:
        name = row.values["VolumeName"]
        if name in seen:
            raise InputError(f"{path}: row {row.number}, column 'VolumeName': duplicate {name!r} (row {seen[name]})")
        seen[name] = row.number
        cell = row.values["sentences"]
        try:
            sentences = json.loads(cell)
        except json.JSONDecodeError:
            sentences = None
        if skip_empty and sentences == []:
            empty.append(row.number)
            continue
        if not (isinstance(sentences, list) and sentences and all(isinstance(s, str) and s.strip() for s in sentences)):
            hint = "; set skip_empty_reports to leave such rows out" if sentences == [] else ""
            raise InputError(
                f"{path}: row {row.number}, column 'sentences': expected a JSON list of non-empty strings such as "
                f'["There is emphysema."], got {cell[:80]!r}{hint}'
            )
        target = _resolve(Path(volume_root), name, row.values.get("path", ""), layout, path, row.number)
        meta = {"split": row.values.get("split", "")}
        items.append(VolumeItem(target, name, row.number, path, text=sentences, meta=meta))
    if empty:
        if not items:
            raise InputError(f"{path}: every row's sentence list is empty")
        logger.warning("%s: %d of %d rows have an empty sentence list and are left out (rows %s)", path, len(empty),
                       len(empty) + len(items), row_list(empty))
    return items


def _patient(item: VolumeItem) -> str:
    if item.meta.get("patient"):
        return str(item.meta["patient"])
    match = _CTRATE_NAME.match(item.name)
    return match["patient"] if match else item.name


def _apply_split_file(items: list[VolumeItem], split_file: str) -> list[VolumeItem]:
    path = Path(split_file)
    header, rows = read_csv_table(path)
    require_columns(path, header, ["VolumeName", "split"])
    by_name = {item.name: item for item in items}
    absent = [row.values["VolumeName"] for row in rows if row.values["VolumeName"] not in by_name]
    if absent:
        raise InputError(missing_ids_message(absent, f"the split file {path}", f"the report table {items[0].source}"))
    chosen = []
    for row in rows:
        split = row.values["split"]
        if split not in _SPLITS:
            raise InputError(f"{path}: row {row.number}, column 'split': expected one of {_SPLITS}, got {split!r}")
        item = by_name[row.values["VolumeName"]]
        item.meta = {**item.meta, "split": split, "split_row": row.number}
        if row.values.get("patient"):
            item.meta["patient"] = row.values["patient"]
        chosen.append(item)
    return chosen


def _check_splits(items: Sequence[VolumeItem], where: str) -> None:
    for item in items:
        match = _CTRATE_NAME.match(item.name)
        if match and match["split"] == "valid":
            raise InputError(
                f"{where}: row {item.meta.get('split_row', item.row)}: {item.name!r} is a CT-RATE validation volume, "
                "i.e. the zero-shot test set; train and validate on a patient-disjoint part of the train split"
            )
    first: dict[str, VolumeItem] = {}
    for item in items:
        patient = _patient(item)
        other = first.setdefault(patient, item)
        if other.meta["split"] != item.meta["split"]:
            raise InputError(
                f"{where}: patient {patient!r} is in both splits ({other.name!r} in {other.meta['split']!r}, "
                f"{item.name!r} in {item.meta['split']!r}); splits must be patient-disjoint"
            )


class VolumeReportDataModule(L.LightningDataModule):
    """CT volume-report pairs for contrastive training (BrgSA).

    Batches: ``image`` float32 (B, 1, X, Y, Z) (``crop_size`` of ``preprocessing``, random crops in training,
    ``val_crop`` in validation); ``text`` list[str] (CT-RATE report table) or list[list[str]] (sentence table), kept
    as lists by :func:`collate_volumes`; ``meta`` list[dict] (``VolumeName``, ``path``, ``row``, ``split``, ``affine``).

    Args:
        reports: a sentence table or a CT-RATE report table (see the module docstring).
        volume_root: folder the volumes are resolved against (CT-RATE: ``dataset/train``).
        split_file: CSV ``VolumeName,split[,patient]`` choosing train/val rows. Defaults to None: the table's own
            ``split`` column (sentence tables only).
        layout: ``"nested"`` (CT-RATE's folders) or ``"flat"``. Defaults to "nested".
        metadata: CT-RATE ``*_metadata.csv`` whose spacing and rescale are used. Defaults to None.
        section: report text of a CT-RATE report table, one of ``findings``, ``impression``, ``findings+impression``.
            Defaults to "findings+impression".
        skip_empty_reports: leave out, with a warning counting them, the rows with no text (an empty ``section``,
            or an empty list written by ``brgsa summarize --allow-empty``) instead of failing. Defaults to False.
        preprocessing: CT preprocessing. Defaults to None (the released :class:`CTVolumePreprocessing`).
        val_crop: crop of validation volumes, ``"center"`` or ``"none"``. Defaults to "center".
        one_volume_per_report: training serves one item per scan, a random reconstruction of it each time, as the
            released loader (see the module docstring). Defaults to False (one item per volume).
        cache_dir: preprocessing cache folder (fill it with ``brgsa prepare``). Defaults to None (no cache).
        batch_size: volumes per batch (training batches drop the last incomplete one). Defaults to 2.
        num_workers: data-loader worker processes. Defaults to 0.
        seed: seed of shuffling and random crops. Defaults to 0.

    Example::

        data = VolumeReportDataModule("sentences.csv", "CT-RATE/dataset/train", split_file="split.csv",
                                      preprocessing=DEMO_PREPROCESSING, cache_dir="cache/")
        data.setup("fit")
        next(iter(data.train_dataloader()))["image"].shape  # torch.Size([2, 1, 96, 96, 48])
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
        preprocessing: CTVolumePreprocessing | None = None,
        val_crop: str = "center",
        one_volume_per_report: bool = False,
        cache_dir: str | None = None,
        batch_size: int = 2,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        _check_common(batch_size, num_workers, layout)
        if section not in SECTIONS:
            raise InputError(f"section must be one of {SECTIONS}, got {section!r}")
        if val_crop not in ("center", "none"):
            raise InputError(f"val_crop must be 'center' or 'none', got {val_crop!r}")
        self.save_hyperparameters(ignore=["preprocessing"])
        self.reports = reports
        self.volume_root = volume_root
        self.split_file = split_file
        self.layout = layout
        self.metadata = metadata
        self.section = section
        self.skip_empty_reports = skip_empty_reports
        self.preprocessing = preprocessing or CTVolumePreprocessing()
        self.val_crop = val_crop
        self.one_volume_per_report = one_volume_per_report
        self.cache_dir = cache_dir
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.datasets: dict[str, CTVolumeDataset] = {}

    def _items(self) -> list[VolumeItem]:
        path = Path(self.reports)
        header, _ = read_csv_table(path)
        geometry = _geometry(self.metadata)
        if "sentences" in header:
            items = read_sentence_table(path, self.volume_root, self.layout, skip_empty=self.skip_empty_reports)
            if geometry is not None:
                absent = [item.name for item in items if item.name not in geometry]
                if absent:
                    raise InputError(missing_ids_message(absent, f"the sentence table {path}", self.metadata))
                for item in items:
                    item.geometry = geometry[item.name]
        elif all(column in header for column in CTRATE_REPORT_COLUMNS):
            on_empty = "skip" if self.skip_empty_reports else "error"
            table = read_ctrate_reports(path, geometry, self.section, self.layout, on_empty=on_empty)
            items = [
                VolumeItem(Path(self.volume_root) / relpath, name, meta["row"], path, meta.get("geometry"), text,
                           meta={"split": ""})
                for name, relpath, text, meta in zip(table.image_ids, table.image_relpaths, table.texts, table.meta)
            ]
        else:
            raise InputError(
                f"{path}: not a sentence table (columns {list(SENTENCE_COLUMNS)}) nor a CT-RATE report table "
                f"(columns {list(CTRATE_REPORT_COLUMNS)}); the header has {header}"
            )
        if self.split_file:
            items = _apply_split_file(items, self.split_file)
        elif "split" not in header:
            raise InputError(
                f"{path} has no 'split' column: pass split_file= (a CSV VolumeName,split with train/val, "
                "patient-disjoint)"
            )
        items = [item for item in items if item.meta["split"] in _SPLITS]
        _check_splits(items, self.split_file or str(path))
        return items

    def prepare_data(self) -> None:
        """Validate the tables and the volume files early; stores nothing."""
        check_volume_files(self._items())

    def setup(self, stage: str | None = None) -> None:
        """Build the train and val datasets from the split.

        Raises:
            InputError: see :meth:`prepare_data`, or no training rows for stage "fit".
        """
        items = self._items()
        check_volume_files(items)
        splits = {name: [item for item in items if item.meta["split"] == name] for name in _SPLITS}
        if stage in (None, "fit") and not splits["train"]:
            raise InputError(f"{self.split_file or self.reports}: no row has split 'train'")
        crops = {"train": "random", "val": self.val_crop}
        for name, chosen in splits.items():
            groups = reconstruction_groups(chosen) if name == "train" and self.one_volume_per_report else None
            self.datasets[name] = CTVolumeDataset(chosen, self.preprocessing, crops[name], self.cache_dir, self.seed,
                                                  groups=groups)
        logger.info("volume-report pairs: %d train (%d training items), %d val", len(splits["train"]),
                    len(self.datasets["train"]), len(splits["val"]))

    def train_dataloader(self) -> DataLoader:
        return _loader(self.datasets["train"], self.batch_size, True, self.num_workers, self.seed)

    def val_dataloader(self) -> DataLoader | list:
        """The val split, or an empty list (validation skipped) when it has no rows."""
        if not self.datasets.get("val"):
            return []
        return _loader(self.datasets["val"], self.batch_size, False, self.num_workers, self.seed)


class VolumeZeroShotDataModule(L.LightningDataModule):
    """A zero-shot CT label set: a CT-RATE-format label CSV and a volume folder, or a registered benchmark.

    Batches: ``image`` float32 (B, 1, X, Y, Z); ``label`` float32 (B, C), 1/0 and NaN for unlabelled, columns in
    class order; ``meta`` list[dict] with ``VolumeName``. The same set serves validation, test and predict.

    Args:
        labels: CT-RATE-format label CSV (``VolumeName`` + one 0/1 column per class). Defaults to None.
        volume_root: folder of the volumes of ``labels``. Defaults to None.
        benchmark: a registered benchmark name (``configs/benchmarks/<name>.yaml``) instead of ``labels``.
            Defaults to None.
        data_root: data folder of ``benchmark``. Defaults to None.
        classes: label columns of ``labels``, in order. Defaults to None (CT-RATE's 18 abnormalities).
        layout: ``"nested"`` or ``"flat"`` volume folders for ``labels``. Defaults to "nested".
        metadata: CT-RATE ``*_metadata.csv`` for ``labels``. Defaults to None.
        preprocessing: CT preprocessing. Defaults to None (the released :class:`CTVolumePreprocessing`).
        crop: ``"center"`` (``crop_size``) or ``"none"`` (full ``size``, as the released evaluation). Defaults to
            "center".
        cache_dir: preprocessing cache folder. Defaults to None.
        batch_size: volumes per batch. Defaults to 1.
        num_workers: data-loader worker processes. Defaults to 0.
        seed: data-loader seed. Defaults to 0.
        check_counts: check the benchmark's expected image and class counts (with ``benchmark``). Defaults to True.

    Example::

        data = VolumeZeroShotDataModule(benchmark="ct-rate", data_root="/data", cache_dir="cache/")
        data.setup("test")
        next(iter(data.test_dataloader()))["label"].shape  # torch.Size([1, 18])
    """

    def __init__(
        self,
        labels: str | None = None,
        volume_root: str | None = None,
        benchmark: str | None = None,
        data_root: str | None = None,
        classes: list[str] | None = None,
        layout: str = "nested",
        metadata: str | None = None,
        preprocessing: CTVolumePreprocessing | None = None,
        crop: str = "center",
        cache_dir: str | None = None,
        batch_size: int = 1,
        num_workers: int = 0,
        seed: int = 0,
        check_counts: bool = True,
    ) -> None:
        super().__init__()
        _check_common(batch_size, num_workers, layout)
        self.check_counts = check_counts
        if (labels is None) == (benchmark is None):
            raise InputError("give either labels= and volume_root= or benchmark= and data_root=")
        if labels is not None and volume_root is None:
            raise InputError("labels= needs volume_root=, the folder of its volumes")
        if benchmark is not None and data_root is None:
            raise InputError(f"benchmark={benchmark!r} needs data_root=")
        if crop not in ("center", "none"):
            raise InputError(f"crop must be 'center' or 'none', got {crop!r}")
        self.save_hyperparameters(ignore=["preprocessing"])
        self.labels = labels
        self.volume_root = volume_root
        self.benchmark = benchmark
        self.data_root = data_root
        self.classes = list(classes) if classes else list(CLASSES)
        self.layout = layout
        self.metadata = metadata
        self.preprocessing = preprocessing or CTVolumePreprocessing()
        self.crop = crop
        self.cache_dir = cache_dir
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.class_names: list[str] = []
        self.dataset: CTVolumeDataset | None = None

    def _items(self) -> list[VolumeItem]:
        if self.benchmark is not None:
            from datasets.benchmarks import load_benchmark

            bench = load_benchmark(self.benchmark, self.data_root, check_counts=self.check_counts)
            label_set, root = bench.labels, bench.image_root
        else:
            label_set = read_ctrate_labels(self.labels, self.classes, self.layout)
            if self.metadata:
                label_set = join_metadata(label_set, read_ctrate_metadata(self.metadata), self.metadata)
            root = Path(self.volume_root)
        self.class_names = list(label_set.class_names)
        return [
            VolumeItem(root / relpath, name, meta["row"], Path(label_set.source), meta.get("geometry"), None, label)
            for name, relpath, label, meta in zip(
                label_set.image_ids, label_set.image_relpaths, label_set.labels, label_set.meta
            )
        ]

    def prepare_data(self) -> None:
        """Validate the label table and the volume files early; stores nothing."""
        check_volume_files(self._items())

    def setup(self, stage: str | None = None) -> None:
        """Build the dataset (the same for every stage).

        Raises:
            InputError: a label table lacking a class column, a volume missing on disk, or a 2D image.
        """
        items = self._items()
        check_volume_files(items)
        self.dataset = CTVolumeDataset(items, self.preprocessing, self.crop, self.cache_dir, self.seed)

    def _loader(self) -> DataLoader:
        if self.dataset is None:
            raise InputError("call setup() before asking for a data loader")
        return _loader(self.dataset, self.batch_size, False, self.num_workers, self.seed)

    def val_dataloader(self) -> DataLoader:
        return self._loader()

    def test_dataloader(self) -> DataLoader:
        return self._loader()

    def predict_dataloader(self) -> DataLoader:
        return self._loader()
