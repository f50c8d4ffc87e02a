"""``brgsa zeroshot``: zero-shot multi-label classification of CT volumes with a BrgSA model folder.

Inputs are a registered benchmark (``--benchmark ct-rate|rad-chestct|ct-rate-lt|... --data-root DIR``) or a
CT-RATE-format label CSV (``--labels CSV --volumes DIR --prompts FILE``). Outputs, in ``--out``:

- ``scores.csv``: one row per volume, ``VolumeName`` + one score column per class (the layout ``brgsa metrics``
  reads), written batch by batch and fsync'ed; a rerun resumes after the last complete row (``run.json`` pins the
  model, classes, prompts and set of volumes it may resume with);
- ``metrics.json`` + ``metrics_per_class.csv`` (:mod:`datasets.metrics`, as ``brgsa metrics`` writes them):
  per-class and macro AUROC, AUPRC, thresholded F1/accuracy/precision/recall, bootstrap intervals (``--bootstrap``).

Score (the paper's): ``(cos(v, t) + cos(v_hat, t)) / 2`` with ``v`` the volume embedding, ``v_hat`` its knowledge-bank
reconstruction and ``t`` the prompt embedding ("There is <finding>"). With ``--negative-prompts`` each class has a
(positive, negative) pair and the score is the positive probability of a softmax over the pair's two mixed scores
(CT-CLIP's protocol). A class with several prompts (`` | `` in a prompt line) takes the maximum over them.

Prompt files: one line per class in class order (``#`` comments skipped), or a ``.json`` object mapping class names
to a prompt or a list of prompts. With ``--labels`` the classes are ``--classes`` (default: CT-RATE's 18
abnormalities), or the JSON file's keys.

Bad input (exit status 2, one line naming the culprit, nothing written): another model's folder, a label CSV lacking
an abnormality column, a labelled volume missing on disk (``--skip-missing-volumes`` scores those present, as the
released RAD-ChestCT evaluation does), a 2D image where a volume is expected, a volume file in
``--volumes`` that the label CSV does not list (``--allow-unlisted`` skips it), a prompt file that does not match the
classes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from datasets.errors import InputError
from datasets.io import ResumableRowWriter, check_run_fingerprint, ensure_writable_dir, sha256_file, sha256_of_set
from datasets.labels.base import LabelSet
from datasets.pretrained import WEIGHTS_NAME

if TYPE_CHECKING:
    from datasets.ct_pipeline import CTVolumePreprocessing

__all__ = ["SCORES_CSV", "RUN_JSON", "ZeroShotTask", "read_class_prompts", "resolve_task", "run_zeroshot", "main"]

logger = logging.getLogger(__name__)

SCORES_CSV = "scores.csv"
RUN_JSON = "run.json"
_NIFTI_SUFFIXES = (".nii", ".nii.gz")


@dataclass
class ZeroShotTask:
    """What to score: the labelled volumes, where they are, and the prompts of each class.

    Attributes:
        labels: label set (rows = volumes, columns = classes, each with a prompt).
        volume_root: folder the label set's relative paths resolve against.
        prompts: per class, its positive prompts.
        negative_prompts: per class, as many negative prompts as positive ones, or None (positive-only scoring).
        sources: role -> file read (fingerprinted in ``metrics.json``).
        name: benchmark name or label CSV path.
    """

    labels: LabelSet
    volume_root: Path
    prompts: list[list[str]]
    negative_prompts: list[list[str]] | None
    sources: dict[str, Path]
    name: str


def read_class_prompts(path: str | Path, class_names: list[str] | None) -> tuple[list[str], list[list[str]]]:
    """Read a prompt file (see the module docstring).

    Args:
        path: text file (one line per class) or JSON object class -> prompt(s).
        class_names: the classes in order; None takes them from a JSON file's keys.

    Returns:
        The class names and, per class, its prompts.

    Raises:
        FileNotFoundError: no file at ``path``.
        InputError: a line count that differs from the class count, a JSON class absent from ``class_names``, a
            class without prompt, or a malformed JSON file.
    """
    from datasets.benchmarks import read_prompt_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(2, "no prompt file", str(path))
    if path.suffix != ".json":
        if class_names is None:
            raise InputError(f"prompt file {path}: a text prompt file needs the class list (--classes)")
        lines = read_prompt_file(path)
        if len(lines) != len(class_names):
            raise InputError(
                f"prompt file {path} has {len(lines)} prompt lines but there are {len(class_names)} classes "
                f"{class_names}; write one line per class in that order, or a JSON object class -> prompt"
            )
        return list(class_names), lines
    try:
        content = json.loads(path.read_text(encoding="utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"prompt file {path} is not valid JSON: {err}") from err
    if not isinstance(content, dict) or not content:
        raise InputError(f"prompt file {path} must hold a non-empty JSON object class -> prompt(s)")
    prompts: dict[str, list[str]] = {}
    for key, value in content.items():
        texts = [value] if isinstance(value, str) else value
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t.strip() for t in texts):
            raise InputError(f"prompt file {path}: class {key!r} needs a prompt string or a list of them")
        prompts[key] = texts
    classes = list(class_names) if class_names is not None else list(prompts)
    unknown = [key for key in prompts if key not in classes]
    missing = [name for name in classes if name not in prompts]
    if unknown or missing:
        raise InputError(f"prompt file {path}: classes {unknown} are not among {classes}; no prompt for {missing}")
    return classes, [prompts[name] for name in classes]


def _pair_negatives(classes: list[str], prompts: list[list[str]], negatives: list[list[str]], source: str
                    ) -> list[list[str]]:
    uneven = [name for name, pos, neg in zip(classes, prompts, negatives) if len(pos) != len(neg)]
    if uneven:
        raise InputError(f"negative prompts {source}: classes {uneven} need one negative prompt per positive prompt")
    return negatives


def _task_from_labels(options: argparse.Namespace) -> ZeroShotTask:
    from datasets.labels.base import read_csv_table
    from datasets.labels.ctrate import CLASSES, join_metadata, read_ctrate_labels, read_ctrate_metadata

    missing = [flag for flag, value in (("--volumes", options.volumes), ("--prompts", options.prompts)) if not value]
    if missing:
        raise InputError(f"--labels needs {' and '.join(missing)}")
    table, root = Path(options.labels), Path(options.volumes)
    if not table.is_file():
        raise FileNotFoundError(2, "no label CSV", str(table))
    if not root.is_dir():
        raise InputError(f"--volumes {root} is not a folder")
    default_classes = None if Path(options.prompts).suffix == ".json" else list(CLASSES)
    classes, prompts = read_class_prompts(options.prompts, options.classes or default_classes)
    _, rows = read_csv_table(table)
    layout = options.layout
    if layout == "auto":
        layout = "flat" if not rows or (root / rows[0].values.get("VolumeName", "")).exists() else "nested"
    labels = read_ctrate_labels(table, classes, layout)
    sources = {"labels": table}
    if options.metadata:
        labels = join_metadata(labels, read_ctrate_metadata(options.metadata), options.metadata)
        sources["metadata"] = Path(options.metadata)
    negatives = None
    if options.negative_prompts is not None:
        if options.negative_prompts == _BENCHMARK_NEGATIVES:
            raise InputError("--negative-prompts needs a FILE with --labels (only benchmarks bring their own)")
        _, read = read_class_prompts(options.negative_prompts, classes)
        negatives = _pair_negatives(classes, prompts, read, options.negative_prompts)
    return ZeroShotTask(labels, root, prompts, negatives, sources, str(table))


_BENCHMARK_NEGATIVES = "<benchmark>"


def _task_from_benchmark(options: argparse.Namespace) -> ZeroShotTask:
    from datasets.benchmarks import load_benchmark

    if options.labels is not None:
        raise InputError("give --benchmark NAME --data-root DIR or --labels CSV --volumes DIR --prompts FILE, not both")
    if options.data_root is None:
        raise InputError(f"--benchmark {options.benchmark} needs --data-root DIR (the folder holding its files)")
    try:
        bench = load_benchmark(options.benchmark, options.data_root, check_counts=not options.no_check_counts)
    except KeyError as err:
        raise InputError(err.args[0]) from err
    sources = {"labels": Path(bench.labels.source), "benchmark": bench.config}
    prompts = bench.prompts
    if options.prompts is not None:  # the user's prompts replace the benchmark's, for every class
        _, prompts = read_class_prompts(options.prompts, bench.class_names)
        sources["prompts"] = Path(options.prompts)
    negatives = None
    if options.negative_prompts == _BENCHMARK_NEGATIVES:
        if bench.negative_prompts is None:
            raise InputError(f"benchmark {bench.name} has no negative prompts; pass --negative-prompts FILE")
        negatives = _pair_negatives(bench.class_names, prompts, bench.negative_prompts, str(bench.config))
    elif options.negative_prompts is not None:
        _, read = read_class_prompts(options.negative_prompts, bench.class_names)
        negatives = _pair_negatives(bench.class_names, prompts, read, options.negative_prompts)
    return ZeroShotTask(bench.labels, bench.image_root, prompts, negatives, sources, bench.name)


def _check_unlisted(task: ZeroShotTask) -> None:
    """Every volume file under ``--volumes`` must be a row of the label CSV."""
    listed = set(task.labels.image_ids)
    unlisted = sorted(
        path.name for path in task.volume_root.rglob("*")
        if path.name.lower().endswith(_NIFTI_SUFFIXES) and path.name not in listed
    )
    if unlisted:
        raise InputError(
            f"{len(unlisted)} volume(s) in {task.volume_root} are absent from the label CSV {task.labels.source}: "
            f"{unlisted[:5]}{' ...' if len(unlisted) > 5 else ''}; pass the matching label CSV, or --allow-unlisted "
            "to score only the labelled volumes"
        )


def _items(task: ZeroShotTask) -> list:
    from datasets.volume_datamodule import VolumeItem

    return [
        VolumeItem(path, name, meta.get("row", 0), Path(task.labels.source), meta.get("geometry"),
                   key_column=task.labels.key_column)
        for name, path, meta in zip(task.labels.image_ids, task.labels.image_paths(task.volume_root), task.labels.meta)
    ]


def resolve_task(options: argparse.Namespace) -> ZeroShotTask:
    """Read and check every input of a run (labels, prompts, volumes) before anything is written.

    Raises:
        InputError: the culprit is named (see the module docstring).
    """
    from datasets.volume_datamodule import check_volume_files

    if options.benchmark is not None:
        task = _task_from_benchmark(options)
    elif options.labels is not None:
        task = _task_from_labels(options)
        if not options.allow_unlisted:
            _check_unlisted(task)
    else:
        raise InputError("give --benchmark NAME --data-root DIR, or --labels CSV --volumes DIR --prompts FILE")
    if options.skip_missing_volumes:
        task = _only_present(task)
    check_volume_files(_items(task))
    return task


def _only_present(task: ZeroShotTask) -> ZeroShotTask:
    """The task restricted to the labelled volumes found on disk (the released RAD-ChestCT evaluation scores those)."""
    present = [name for name, path in zip(task.labels.image_ids, task.labels.image_paths(task.volume_root))
               if path.exists()]
    missing = len(task.labels) - len(present)
    if not present:
        raise InputError(f"none of the {len(task.labels)} volumes of {task.labels.source} is under {task.volume_root}")
    if missing:
        logger.warning("--skip-missing-volumes: %d of %d labelled volumes are not on disk and are not scored; the "
                       "metrics cover the other %d", missing, len(task.labels), len(present))
    return dataclasses.replace(task, labels=task.labels.select_images(present))


def run_zeroshot(
    model_dir: str | os.PathLike, task: ZeroShotTask, out: str | os.PathLike, *, crop: str = "none",
    cache_dir: str | None = None, batch_size: int = 1, num_workers: int = 0, already_hu: bool = False,
    progress: bool = True,
) -> Path:
    """Score every volume of ``task`` not yet in ``out/scores.csv`` and append the rows; returns the CSV path.

    Args:
        model_dir: BrgSA model folder.
        task: from :func:`resolve_task`.
        out: output folder.
        crop: ``"none"`` (full preprocessed volume, the released evaluation) or ``"center"`` (the training crop
            size). Defaults to "none".
        cache_dir: preprocessing cache. Defaults to None.
        batch_size: volumes per forward pass. Defaults to 1.
        num_workers: data-loader worker processes. Defaults to 0.
        already_hu: the stored values are HU (CT-RATE v2). Defaults to False.
        progress: show a progress bar. Defaults to True.

    Raises:
        InputError: another model's folder, or ``out`` holding scores of another run.
    """
    import torch
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    from brgsa.model import zero_shot_scores
    from brgsa.pretrained import from_pretrained
    from datasets.volume_datamodule import CTVolumeDataset, collate_volumes

    net, preprocessing, _ = from_pretrained(model_dir)
    if already_hu:
        preprocessing = dataclasses.replace(preprocessing, already_hu=True)
    classes = task.labels.class_names
    texts = [text for group in task.prompts for text in group]
    negatives = [text for group in task.negative_prompts for text in group] if task.negative_prompts else None
    index = torch.as_tensor([j for j, group in enumerate(task.prompts) for _ in group])
    weights = sha256_file(Path(model_dir) / WEIGHTS_NAME)
    fingerprint = {"model": str(Path(model_dir).resolve()), "weights_sha256": weights, "task": task.name,
                   "classes": classes, "prompts": texts, "negative_prompts": negatives, "crop": crop,
                   "preprocessing": preprocessing.to_dict(), "images_sha256": sha256_of_set(task.labels.image_ids)}
    out = ensure_writable_dir(out)
    check_run_fingerprint(out, fingerprint, RUN_JSON)
    with torch.inference_mode(), ResumableRowWriter(out / SCORES_CSV, ["VolumeName", *classes]) as writer:
        items = [item for item in _items(task) if not writer.done(item.name)]
        if not items:
            return out / SCORES_CSV
        if cache_dir is not None:
            _report_cache_coverage(items, preprocessing, cache_dir)
        prompt_embeds = net.encode_texts(texts)[0]  # (P, E)
        negative_embeds = net.encode_texts(negatives)[0] if negatives else None
        dataset = CTVolumeDataset(items, preprocessing, crop, cache_dir)
        loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=collate_volumes)
        for batch in tqdm(loader, desc="brgsa zeroshot", unit="batch", disable=not progress):
            scores = zero_shot_scores(*net.encode_volumes(batch["image"]), prompt_embeds, negative_embeds)  # (B, P)
            class_scores = torch.stack([scores[:, index == j].max(dim=1).values for j in range(len(classes))], 1)
            for meta, row in zip(batch["meta"], class_scores.tolist()):
                writer.write({"VolumeName": meta["VolumeName"], **{c: repr(v) for c, v in zip(classes, row)}})
    return out / SCORES_CSV


def _report_cache_coverage(items: list, preprocessing: CTVolumePreprocessing, cache_dir: str) -> None:
    """Log how many volumes the cache already holds for this model's preprocessing (warn when none of a used cache)."""
    from datasets.cache import PreprocessCache
    from datasets.ct_pipeline import volume_cache_key

    cache = PreprocessCache(cache_dir)
    found = sum(cache.has(volume_cache_key(item.path, preprocessing, item.geometry)) for item in items)
    if found == 0 and any(cache.folder.glob("*/*.json")):
        logger.warning(
            "the cache %s holds no volume preprocessed as this model needs (entries are keyed by every preprocessing "
            "parameter); all %d are preprocessed now and added. Fill it for this model with: brgsa prepare --model "
            "MODEL --volumes ... --out %s", cache.folder, len(items), cache.folder,
        )
    else:
        logger.info("cache %s: %d of %d volumes already preprocessed", cache.folder, found, len(items))


def _read_scores(path: Path, task: ZeroShotTask) -> np.ndarray:
    from brgsa.metrics import read_scores

    table = read_scores(path)
    rows = {name: i for i, name in enumerate(table.names or [])}
    absent = [name for name in task.labels.image_ids if name not in rows]
    if absent:
        raise InputError(f"{path} lacks scores of {len(absent)} volumes (first {absent[:5]}); rerun to resume")
    columns = [table.columns.index(name) for name in task.labels.class_names]
    return table.values[[rows[name] for name in task.labels.image_ids]][:, columns]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="brgsa zeroshot", description=__doc__.splitlines()[0])
    parser.add_argument("model", help="BrgSA model folder (brgsa export / convert-official / demo)")
    parser.add_argument("--benchmark", help="registered benchmark: ct-rate, rad-chestct, ct-rate-lt, synthetic-ct3d")
    parser.add_argument("--data-root", help="folder substituted for {data_root} in the benchmark's paths")
    parser.add_argument("--no-check-counts", action="store_true", help="accept a partial copy of the benchmark")
    parser.add_argument("--labels", help="CT-RATE-format label CSV (VolumeName + one 0/1 column per class)")
    parser.add_argument("--volumes", help="folder of the volumes of --labels")
    parser.add_argument("--layout", choices=("auto", "nested", "flat"), default="auto",
                        help="--volumes layout: CT-RATE's nested folders or one flat folder (default: auto)")
    parser.add_argument("--metadata", help="CT-RATE *_metadata.csv of --labels (spacing and rescale per volume)")
    parser.add_argument("--prompts", help="prompt file: one line per class, or JSON class -> prompt; required with "
                        "--labels, replaces a benchmark's own prompts with --benchmark")
    parser.add_argument("--classes", nargs="+", help="label columns of --labels (default: CT-RATE's 18)")
    parser.add_argument("--skip-missing-volumes", action="store_true",
                        help="score only the labelled volumes found on disk (warns with the count; the released "
                        "RAD-ChestCT evaluation does this); by default a missing volume is an error")
    parser.add_argument("--allow-unlisted", action="store_true",
                        help="accept volume files in --volumes that the label CSV does not list (not scored)")
    parser.add_argument("--negative-prompts", nargs="?", const=_BENCHMARK_NEGATIVES, metavar="FILE",
                        help="pos/neg softmax scoring; FILE optional with --benchmark (its negative prompts)")
    parser.add_argument("--out", default="zeroshot", help="output folder (default: ./zeroshot)")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples, 0 for none (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap base seed (default 0)")
    parser.add_argument("--crop", choices=("none", "center"), default="none",
                        help="none: the full preprocessed volume (released evaluation); center: the training crop")
    parser.add_argument("--cache", help="preprocessing cache folder (brgsa prepare)")
    parser.add_argument("--batch-size", type=int, default=1, help="volumes per forward pass (default 1)")
    parser.add_argument("--workers", type=int, default=0, help="data-loader worker processes (default 0)")
    parser.add_argument("--already-hu", action="store_true", help="stored values are HU (CT-RATE v2)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str]) -> int:
    """Run ``brgsa zeroshot``; see the module docstring."""
    from datasets.cli_utils import setup_logging
    from datasets.metrics import evaluate_multilabel, format_table, write_metrics
    from datasets.pretrained import read_model_config

    options = _parser().parse_args(argv)
    setup_logging()
    if options.bootstrap < 0 or options.batch_size < 1 or options.workers < 0:
        raise InputError("--bootstrap and --workers must be >= 0 and --batch-size >= 1")
    read_model_config(options.model, "brgsa")  # another model's folder fails before anything is read or written
    task = resolve_task(options)
    scores_path = run_zeroshot(
        options.model, task, options.out, crop=options.crop, cache_dir=options.cache, batch_size=options.batch_size,
        num_workers=options.workers, already_hu=options.already_hu, progress=not options.no_progress,
    )
    scores = _read_scores(scores_path, task)
    result = evaluate_multilabel(scores, task.labels.labels, task.labels.class_names, n_resamples=options.bootstrap,
                                 seed=options.seed)
    extra = {
        "command": "brgsa zeroshot", "arguments": list(argv), "task": task.name, "model": str(options.model),
        "classes": task.labels.class_names, "prompts": task.prompts, "negative_prompts": task.negative_prompts,
        "score": "(cos(v, t) + cos(v_hat, t)) / 2" + (", softmax over (positive, negative)" if task.negative_prompts
                                                       else ""),
        "crop": options.crop,
    }
    json_path, csv_path = write_metrics(result, options.out, {"scores": scores_path, **task.sources}, extra)
    print(format_table(result, ("auroc", "auprc", "f1_weighted", "accuracy")))
    print(f"wrote {scores_path}, {json_path} and {csv_path}")
    return 0
