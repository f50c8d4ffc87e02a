"""``carzero zeroshot``: zero-shot multi-label classification of radiographs with a CARZero model folder.

Inputs are a registered benchmark (``--benchmark NAME --data-root DIR``) or a label table read by a named adapter
(``--labels TABLE --adapter NAME --images DIR --prompts FILE``). Outputs, in ``--out``:

- ``scores.csv``: one row per image (``image_id`` + one score column per class), written batch by batch and fsync'ed;
  a rerun resumes after the last complete row (``run.json`` pins the model, prompts and images it may resume with);
- ``metrics.json`` + ``metrics_per_class.csv`` (:mod:`datasets.metrics`): per-class and macro AUROC, AUPRC and
  thresholded F1/accuracy; the threshold rule is stated in the JSON;
- ``roc.png``: ROC curve of every class and the macro-average curve.

Scores: with positive prompts only (the paper's protocol) a class's score is the CARZero logit ``(i2t + t2i) / 2`` of
its prompt (the maximum over its prompts if it has several). With ``--negative-prompts`` it is the softmax over the
(positive, negative) pair, ``sigmoid(pos - neg)``, CheXzero-style.

Prompt files: one line per class in class order (``#`` comments skipped, `` | `` separates alternatives), or a
``.json`` object mapping class names (or class indices, the released ``<set>_text.json`` layout) to a prompt or a list
of prompts; classes without a prompt are left out of the evaluation.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from datasets.benchmarks import ADAPTERS, load_benchmark, read_labels, read_prompt_file
from datasets.errors import InputError
from datasets.io import ResumableRowWriter, check_run_fingerprint, ensure_writable_dir, sha256_file, sha256_of_set
from datasets.labels.base import LabelSet
from datasets.labels.chestxray14 import read_image_list
from datasets.pretrained import WEIGHTS_NAME

__all__ = ["ZeroShotTask", "main", "read_class_prompts", "resolve_task", "run_zeroshot"]

logger = logging.getLogger(__name__)

SCORES_CSV = "scores.csv"
RUN_JSON = "run.json"
ROC_PNG = "roc.png"


@dataclass
class ZeroShotTask:
    """What to score: the label set, where its images are, and the prompts of each class.

    Attributes:
        labels: label set restricted to the prompted classes (rows = images).
        image_root: folder the image ids resolve against.
        prompts: per class, its positive prompts.
        negative_prompts: per class, its negative prompts, or None (positive-only scoring).
        sources: role -> file read (for the metrics' input fingerprints).
        name: benchmark name or label-table path.
    """

    labels: LabelSet
    image_root: Path
    prompts: list[list[str]]
    negative_prompts: list[list[str]] | None
    sources: dict[str, Path]
    name: str


def read_class_prompts(path: str | Path, class_names: list[str]) -> dict[str, list[str]]:
    """Read a prompt file (see the module docstring) into ``class -> prompts``.

    Raises:
        FileNotFoundError: no file at ``path``.
        InputError: a class the labels do not have, a line count that differs from the class count, or a bad JSON.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(2, "no prompt file", str(path))
    if path.suffix != ".json":
        lines = read_prompt_file(path)
        if len(lines) != len(class_names):
            raise InputError(
                f"prompt file {path} has {len(lines)} prompt lines but the labels have {len(class_names)} classes "
                f"{class_names}; write one line per class in that order, or a JSON object class -> prompt"
            )
        return dict(zip(class_names, lines))
    try:
        content = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as err:
        raise InputError(f"prompt file {path} is not valid JSON: {err}") from err
    if not isinstance(content, dict) or not content:
        raise InputError(f"prompt file {path} must hold a non-empty JSON object class -> prompt(s)")
    prompts: dict[str, list[str]] = {}
    for key, value in content.items():
        name = class_names[int(key)] if key.isdigit() and int(key) < len(class_names) else key
        if name not in class_names:
            raise InputError(f"prompt file {path} names class {key!r}, which is absent from the labels {class_names}")
        texts = [value] if isinstance(value, str) else value
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t.strip() for t in texts):
            raise InputError(f"prompt file {path}: class {key!r} needs a prompt string or a list of them")
        prompts[name] = texts
    return prompts


def _parse_adapter_options(pairs: list[str]) -> dict[str, Any]:
    """``["classes=[Atelectasis, Edema]", "uncertainty=u_ones"]`` -> options; values are read as YAML."""
    parsed: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--adapter-option {pair!r}: expected KEY=VALUE, e.g. uncertainty=u_ones")
        try:
            parsed[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as err:
            raise InputError(f"--adapter-option {pair!r}: the value is not valid YAML ({err})") from err
    return parsed


def _task_from_labels(options: argparse.Namespace) -> ZeroShotTask:
    missing = [flag for flag, value in (("--adapter", options.adapter), ("--images", options.images),
                                         ("--prompts", options.prompts)) if value is None]
    if missing:
        raise InputError(f"--labels needs {', '.join(missing)}")
    if options.adapter not in ADAPTERS:
        raise InputError(f"unknown adapter {options.adapter!r}; available adapters: {sorted(ADAPTERS)}")
    table = Path(options.labels)
    if not table.is_file():
        raise FileNotFoundError(2, "no label table", str(table))
    adapter_options = _parse_adapter_options(options.adapter_option or [])
    labels = read_labels(options.adapter, {"labels": table}, adapter_options, "--adapter-option")
    sources = {"labels": table}
    if options.split_list:
        labels = labels.select_images(read_image_list(options.split_list), f"the split list {options.split_list}")
        sources["split_list"] = Path(options.split_list)
    positives = read_class_prompts(options.prompts, labels.class_names)
    classes = [name for name in labels.class_names if name in positives]
    if len(classes) < len(labels.class_names):
        logger.warning(
            "prompt file %s prompts %d of the %d label classes; evaluating only %s (left out: %s)", options.prompts,
            len(classes), len(labels.class_names), classes, [n for n in labels.class_names if n not in positives],
        )
    negatives = None
    if options.negative_prompts:
        read = read_class_prompts(options.negative_prompts, labels.class_names)
        absent = [name for name in classes if name not in read]
        if absent:
            raise InputError(f"negative prompt file {options.negative_prompts} has no prompt for classes {absent}")
        negatives = [read[name] for name in classes]
    return ZeroShotTask(labels.select_classes(classes), Path(options.images), [positives[n] for n in classes],
                        negatives, sources, str(table))


def resolve_task(options: argparse.Namespace) -> ZeroShotTask:
    """Read and check every input of a run (labels, prompts, images) before anything is written.

    Raises:
        InputError: the culprit is named: an unknown benchmark or adapter, a label value outside the format's rules,
            an image absent from the label table or from disk, a prompt-file class absent from the labels.
    """
    if options.benchmark is not None:
        if options.labels is not None:
            raise InputError("give --benchmark NAME --data-root DIR or --labels TABLE ..., not both")
        if options.data_root is None:
            raise InputError(f"--benchmark {options.benchmark} needs --data-root DIR (the folder holding its files)")
        if options.adapter_option:
            raise InputError("--adapter-option goes with --labels; a benchmark's options are set in its YAML")
        try:
            bench = load_benchmark(options.benchmark, options.data_root, check_counts=not options.no_check_counts)
        except KeyError as err:
            raise InputError(err.args[0]) from err
        sources = {"labels": Path(bench.labels.source)}
        prompts = bench.prompts
        if options.prompts is not None:  # the user's prompts replace the benchmark's, for every class
            read = read_class_prompts(options.prompts, bench.class_names)
            missing = [name for name in bench.class_names if name not in read]
            if missing:
                raise InputError(
                    f"--prompts {options.prompts} has no prompt for the benchmark's classes {missing}; with "
                    "--benchmark the file must prompt every class"
                )
            prompts = [read[name] for name in bench.class_names]
            sources["prompts"] = Path(options.prompts)
        negatives = bench.negative_prompts
        if options.negative_prompts:
            read = read_class_prompts(options.negative_prompts, bench.class_names)
            negatives = [read.get(name, []) for name in bench.class_names]
        task = ZeroShotTask(bench.labels, bench.image_root, prompts, negatives, sources, bench.name)
    elif options.labels is not None:
        task = _task_from_labels(options)
    else:
        raise InputError("give --benchmark NAME --data-root DIR, or --labels TABLE --adapter NAME --images DIR "
                         "--prompts FILE")
    if task.negative_prompts is not None:
        empty = [n for n, texts in zip(task.labels.class_names, task.negative_prompts) if not texts]
        if empty:
            raise InputError(f"--negative-prompts: no negative prompt for classes {empty}")
    task.labels.check_images(task.image_root)
    return task


def _class_scores(prompt_scores: torch.Tensor, index: list[int], num_classes: int) -> torch.Tensor:
    """``(N, P)`` prompt scores -> ``(N, C)``: the maximum over each class's prompts."""
    columns = torch.as_tensor(index)
    return torch.stack([prompt_scores[:, columns == j].max(dim=1).values for j in range(num_classes)], dim=1)


def _scorer_texts(task: ZeroShotTask) -> tuple[list[str], list[int], list[int]]:
    """All prompt texts, the class of each positive prompt, the class of each negative prompt."""
    texts = [t for group in task.prompts for t in group]
    positive_index = [j for j, group in enumerate(task.prompts) for _ in group]
    negative_index: list[int] = []
    if task.negative_prompts is not None:
        texts += [t for group in task.negative_prompts for t in group]
        negative_index = [j for j, group in enumerate(task.negative_prompts) for _ in group]
    return texts, positive_index, negative_index


@torch.inference_mode()
def run_zeroshot(
    model_dir: str | Path, task: ZeroShotTask, out: str | Path, batch_size: int = 32, bf16: bool = False,
    num_workers: int = 0, progress: bool = True,
) -> Path:
    """Score every image of ``task`` not yet in ``out/scores.csv`` and append the rows; returns the CSV path."""
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    from carzero.pretrained import from_pretrained
    from carzero.scoring import CARZeroScorer
    from datasets.pairs_datamodule import CXRDataset, collate_cxr

    net, preprocessing, _ = from_pretrained(model_dir)  # InputError for another model's folder
    texts, positive_index, negative_index = _scorer_texts(task)
    classes = task.labels.class_names
    out = ensure_writable_dir(out)
    weights = sha256_file(Path(model_dir) / WEIGHTS_NAME)
    fingerprint = {"model": str(Path(model_dir).resolve()), "weights_sha256": weights, "labels": task.name,
                   "classes": classes, "prompts": texts, "negative_prompts": task.negative_prompts is not None,
                   "bf16": bf16, "images_sha256": sha256_of_set(task.labels.image_ids)}
    check_run_fingerprint(out, fingerprint, RUN_JSON)
    with ResumableRowWriter(out / SCORES_CSV, ["image_id", *classes]) as writer:
        todo = [i for i, image_id in enumerate(task.labels.image_ids) if not writer.done(image_id)]
        if not todo:
            return out / SCORES_CSV
        paths = task.labels.image_paths(task.image_root)
        dataset = CXRDataset([paths[i] for i in todo], preprocessing,
                             meta=[{"image_id": task.labels.image_ids[i]} for i in todo])
        loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=collate_cxr)
        scorer = CARZeroScorer(net, texts, dtype=torch.bfloat16 if bf16 else None)
        for batch in tqdm(loader, desc="carzero zeroshot", unit="batch", disable=not progress):
            scores = scorer.score_images(batch["image"]).mean.float().cpu()  # (B, P)
            class_scores = _class_scores(scores[:, : len(positive_index)], positive_index, len(classes))
            if negative_index:
                negatives = _class_scores(scores[:, len(positive_index):], negative_index, len(classes))
                class_scores = torch.sigmoid(class_scores - negatives)  # softmax over (positive, negative)
            for meta, row in zip(batch["meta"], class_scores.tolist()):
                writer.write({"image_id": meta["image_id"], **{name: repr(v) for name, v in zip(classes, row)}})
    return out / SCORES_CSV


def read_scores(path: Path, task: ZeroShotTask) -> np.ndarray:
    """The ``(N, C)`` scores of ``scores.csv`` in the label set's row order.

    Raises:
        InputError: an image of the label set has no row (the run is incomplete).
    """
    with open(path, newline="", encoding="utf-8") as handle:
        rows = {row["image_id"]: row for row in csv.DictReader(handle)}
    absent = [image_id for image_id in task.labels.image_ids if image_id not in rows]
    if absent:
        raise InputError(f"{path} lacks scores of {len(absent)} images (first {absent[:5]}); rerun to resume")
    return np.array([[float(rows[i][c]) for c in task.labels.class_names] for i in task.labels.image_ids])


def _roc_points(scores: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False- and true-positive rates at every distinct threshold, from (0, 0) to (1, 1) (for plotting only)."""
    order = np.argsort(-scores, kind="stable")
    scores, truth = scores[order], truth[order]
    last = np.r_[np.flatnonzero(np.diff(scores)), truth.size - 1]  # last index of each distinct score
    tp, fp = np.cumsum(truth)[last], np.cumsum(1 - truth)[last]
    return np.r_[0.0, fp / max(fp[-1], 1)], np.r_[0.0, tp / max(tp[-1], 1)]


def plot_roc(scores: np.ndarray, labels: np.ndarray, result: Any, path: Path, title: str) -> None:
    """Write a PNG with each evaluable class's ROC curve (AUROC in the legend) and the macro-average curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = np.linspace(0.0, 1.0, 201)
    figure, axes = plt.subplots(figsize=(7.5, 7.5))
    curves = []
    for c, item in enumerate(result.classes):
        if item.excluded:
            continue
        labelled = ~np.isnan(labels[:, c])
        fpr, tpr = _roc_points(scores[labelled, c], labels[labelled, c].astype(int))
        curves.append(np.interp(grid, fpr, tpr))
        axes.plot(fpr, tpr, linewidth=0.9, alpha=0.7, label=f"{item.name} ({item.values['auroc']:.3f})")
    if curves:
        axes.plot(grid, np.mean(curves, axis=0), color="black", linewidth=2.5,
                  label=f"macro ({result.macro['auroc']:.3f})")
    axes.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=0.8)
    axes.set(xlabel="false-positive rate", ylabel="true-positive rate", xlim=(0, 1), ylim=(0, 1.01), title=title)
    axes.legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    figure.savefig(tmp, dpi=120)
    plt.close(figure)
    tmp.replace(path)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="carzero zeroshot", description=__doc__.splitlines()[0])
    parser.add_argument("model", help="CARZero model folder (carzero export / convert-official / demo)")
    parser.add_argument("--benchmark", help="registered benchmark name (configs/benchmarks/NAME.yaml)")
    parser.add_argument("--data-root", help="folder substituted for {data_root} in the benchmark's paths")
    parser.add_argument("--no-check-counts", action="store_true", help="accept a benchmark copy of another size")
    parser.add_argument("--labels", help="label table (instead of --benchmark)")
    parser.add_argument("--adapter", help=f"label-table format: one of {sorted(ADAPTERS)}")
    parser.add_argument("--images", help="folder the label table's image ids are relative to")
    parser.add_argument("--split-list", help="image list selecting the rows of --labels (e.g. test_list.txt)")
    parser.add_argument(
        "--adapter-option", action="append", metavar="KEY=VALUE",
        help="an option of --adapter, value read as YAML; repeatable. chexpert.csv: uncertainty=ignore|u_ones|u_zeros, "
        "blank=zeros|ignore, classes=[...]; chexpert.test: classes=[...]; padchest: rarest=N",
    )
    parser.add_argument("--prompts", help="prompt file (one line per class, or JSON class -> prompt); required with "
                        "--labels, replaces a benchmark's own prompts with --benchmark")
    parser.add_argument("--negative-prompts", help="negative prompt file: score = softmax over (positive, negative)")
    parser.add_argument("--out", default="runs/carzero_zeroshot", help="output folder (default runs/carzero_zeroshot)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per batch (default 32)")
    parser.add_argument("--num-workers", type=int, default=0, help="image-reading worker processes (default 0)")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast for the encoders and fusion")
    parser.add_argument("--bootstrap", type=int, default=0, help="bootstrap resamples for 95%% intervals (default 0)")
    return parser


def main(argv: list[str]) -> int:
    """Run ``carzero zeroshot``; see the module docstring."""
    options = _parser().parse_args(argv)
    if options.batch_size < 1 or options.bootstrap < 0 or options.num_workers < 0:
        raise InputError("--batch-size must be >= 1, --bootstrap and --num-workers >= 0")
    if not Path(options.model).is_dir():
        raise InputError(f"model folder {options.model} does not exist")
    from datasets.pretrained import read_model_config

    read_model_config(options.model, "carzero")  # another model's folder fails before any output is written
    task = resolve_task(options)
    out = Path(options.out)
    scores_path = run_zeroshot(options.model, task, out, options.batch_size, options.bf16, options.num_workers)
    scores = read_scores(scores_path, task)
    from datasets.metrics import evaluate_multilabel, format_table, write_metrics

    result = evaluate_multilabel(scores, task.labels.labels, task.labels.class_names,
                                 n_resamples=options.bootstrap)
    rule = ("per class, the threshold closest to the ROC corner (0, 1), chosen on these same images "
            "(datasets.metrics.choose_thresholds); F1/accuracy are therefore optimistic")
    scoring = ("sigmoid(positive - negative) logit: softmax over the (positive, negative) prompt pair"
               if task.negative_prompts is not None else "CARZero logit (i2t + t2i) / 2 of the positive prompt")
    write_metrics(result, out, {"scores": scores_path, **task.sources}, extra={
        "model": str(options.model), "benchmark": task.name, "threshold_rule_text": rule, "scoring": scoring,
        "prompts": dict(zip(task.labels.class_names, task.prompts)),
    })
    plot_roc(scores, task.labels.labels, result, out / ROC_PNG, f"CARZero zero-shot: {task.name}")
    print(format_table(result))
    auroc = result.macro["auroc"]
    print(f"macro AUROC {auroc:.4f} over {len(task.labels)} images" if not math.isnan(auroc) else "macro AUROC n/a")
    print(f"wrote {scores_path}, {out / 'metrics.json'}, {out / ROC_PNG}")
    return 0
