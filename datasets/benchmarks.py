"""The zero-shot benchmark registry: one YAML per benchmark in ``configs/benchmarks/``.

A benchmark YAML names the label adapter (:data:`ADAPTERS`), its source files (paths with a ``{data_root}``
placeholder; a list of paths where releases name a file differently, the first present being read), the image
folder, the class order and display names, the label rule, the prompt file, the expected image and class counts
(checked at load) and the published figures to compare against. Example::

    bench = load_benchmark("chestxray14", "/data")
    bench.labels.labels.shape        # (22433, 14)
    bench.prompt_texts[:1]           # ['There is Atelectasis']

Prompt files (``configs/prompts/<name>.txt``): one line per class of the YAML's ``classes``, in that order; blank
lines and lines starting with ``#`` are skipped; a line may hold several prompts separated by `` | ``, in which case
the class score is the maximum over them (BrgSA's rule for RAD-ChestCT ``calcification``), see
:meth:`Benchmark.class_scores`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from datasets.errors import InputError
from datasets.labels import chestxdet10, chestxray14, chexpert, ctrate, openi, padchest, radchestct
from datasets.labels.base import LabelSet

__all__ = [
    "CONFIG_DIR",
    "ADAPTERS",
    "ADAPTER_OPTIONS",
    "Benchmark",
    "list_benchmarks",
    "load_benchmark",
    "read_labels",
    "missing_file_reason",
    "read_prompt_file",
]

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
_PROMPT_SEPARATOR = " | "
_KEYS = {
    "name", "description", "modality", "adapter", "sources", "images", "options", "classes", "display_names",
    "label_rule", "prompts", "negative_prompts", "expected", "published",
}
_REQUIRED = ("name", "adapter", "sources", "images", "classes", "label_rule", "prompts", "expected")

logger = logging.getLogger(__name__)

Adapter = Callable[[Mapping[str, Path], Mapping[str, Any]], LabelSet]


def _chestxray14_data_entry(sources: Mapping[str, Path], options: Mapping[str, Any]) -> LabelSet:
    labels = chestxray14.read_data_entry(sources["labels"])
    if "split_list" in sources:
        labels = labels.select_images(chestxray14.read_image_list(sources["split_list"]), str(sources["split_list"]))
    return labels


def _chexpert_test(sources: Mapping[str, Path], options: Mapping[str, Any]) -> LabelSet:
    return chexpert.read_chexpert_test(sources["labels"], **options)


def _chexpert_csv(sources: Mapping[str, Path], options: Mapping[str, Any]) -> LabelSet:
    return chexpert.read_chexpert_csv(sources["labels"], **options)


def _padchest(sources: Mapping[str, Path], options: Mapping[str, Any]) -> LabelSet:
    labels = padchest.read_padchest_csv(sources["labels"])
    rarest = options.get("rarest")
    return labels.select_classes(padchest.rarest_classes(labels, int(rarest))) if rarest else labels


def _openi(sources: Mapping[str, Path], options: Mapping[str, Any]) -> LabelSet:
    table = openi.read_openi_custom_csv(sources["labels"])
    if "image_list" not in sources:  # a custom table (carzero zeroshot --labels): every row is evaluated
        return table
    return table.select_images(openi.read_openi_image_list(sources["image_list"]), str(sources["image_list"]))


def _ctrate(sources: Mapping[str, Path], options: Mapping[str, Any]) -> LabelSet:
    labels = ctrate.read_ctrate_labels(sources["labels"], layout=options.get("layout", "nested"))
    if "metadata" in sources:
        geometry = ctrate.read_ctrate_metadata(sources["metadata"])
        labels = ctrate.join_metadata(labels, geometry, str(sources["metadata"]))
    return labels


def _ctrate_lt(sources: Mapping[str, Path], options: Mapping[str, Any]) -> LabelSet:
    return ctrate.read_ctrate_labels(sources["labels"], ctrate.LT_CLASSES, layout=options.get("layout", "nested"))


ADAPTERS: dict[str, Adapter] = {
    "chestxray14.data_entry": _chestxray14_data_entry,
    "chestxray14.chexnet_list": lambda sources, options: chestxray14.read_chexnet_list(sources["labels"]),
    "chexpert.test": _chexpert_test,
    "chexpert.csv": _chexpert_csv,
    "padchest": _padchest,
    "chestxdet10": lambda sources, options: chestxdet10.read_chestxdet10_json(sources["labels"]),
    "openi": _openi,
    "ct-rate": _ctrate,
    "ct-rate-lt": _ctrate_lt,
    "rad-chestct": lambda sources, options: radchestct.read_radchestct_labels(sources["labels"]),
}
# The options each adapter takes (a benchmark YAML's ``options``, ``carzero zeroshot --adapter-option KEY=VALUE``).
ADAPTER_OPTIONS: dict[str, tuple[str, ...]] = {
    "chexpert.test": ("classes",),
    "chexpert.csv": ("uncertainty", "blank", "classes"),
    "padchest": ("rarest",),
    "ct-rate": ("layout",),
    "ct-rate-lt": ("layout",),
}


def read_labels(adapter: str, sources: Mapping[str, Path], options: Mapping[str, Any], where: str) -> LabelSet:
    """Read a label table with a registered adapter.

    Args:
        adapter: a key of :data:`ADAPTERS`.
        sources: the adapter's files (``labels``, and e.g. ``split_list`` or ``image_list``).
        options: the adapter's options, a subset of :data:`ADAPTER_OPTIONS` ``[adapter]``.
        where: what to blame in errors about ``options`` (a YAML file, a command-line flag).

    Raises:
        InputError: an unknown adapter, an option the adapter does not take or a bad option value (both named with
            ``where``), and the adapter's own errors.
    """
    if adapter not in ADAPTERS:
        raise InputError(f"{where}: unknown adapter {adapter!r}; available adapters: {sorted(ADAPTERS)}")
    accepted = ADAPTER_OPTIONS.get(adapter, ())
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise InputError(f"{where}: adapter {adapter!r} takes no option {unknown}; it takes {list(accepted) or 'none'}")
    if not options:
        return ADAPTERS[adapter](sources, options)
    try:
        return ADAPTERS[adapter](sources, options)
    except InputError:  # the table's own problem (a bad cell, a missing column): its message names file and row
        raise
    except (TypeError, ValueError) as err:  # a value of the wrong type or outside the reader's choices
        raise InputError(f"{where}: bad option for adapter {adapter!r}: {err}") from err


@dataclass
class Benchmark:
    """A loaded zero-shot benchmark.

    Attributes:
        name: registry name.
        labels: the label set (rows = images, columns = :attr:`class_names`).
        class_names: class order (as in the label files).
        display_names: human-readable class names, same order.
        prompts: one list of prompts per class (usually one "There is <finding>" prompt).
        negative_prompts: same shape as ``prompts`` when the YAML names a negative prompt file, else None.
        image_root: folder the images are resolved against.
        label_rule: the label convention, in words.
        published: published figures to compare against (dicts with ``model``, ``metric``, ``value``, ``source``).
        config: the YAML file read.
    """

    name: str
    labels: LabelSet
    class_names: list[str]
    display_names: list[str]
    prompts: list[list[str]]
    negative_prompts: list[list[str]] | None
    image_root: Path
    label_rule: str
    published: list[dict[str, Any]]
    config: Path

    @property
    def prompt_texts(self) -> list[str]:
        """All prompts, flattened class by class (the text batch to encode)."""
        return [text for texts in self.prompts for text in texts]

    @property
    def prompt_class_index(self) -> list[int]:
        """Class index of each entry of :attr:`prompt_texts`."""
        return [j for j, texts in enumerate(self.prompts) for _ in texts]

    def class_scores(self, prompt_scores: np.ndarray) -> np.ndarray:
        """Per-class scores ``(N, C)`` from per-prompt scores ``(N, P)``: the maximum over each class's prompts.

        Raises:
            ValueError: ``prompt_scores`` does not have one column per prompt.
        """
        prompt_scores = np.asarray(prompt_scores)
        if prompt_scores.ndim != 2 or prompt_scores.shape[1] != len(self.prompt_texts):
            raise ValueError(f"expected scores of shape (N, {len(self.prompt_texts)}), got {prompt_scores.shape}")
        index = np.asarray(self.prompt_class_index)
        return np.stack([prompt_scores[:, index == j].max(axis=1) for j in range(len(self.prompts))], axis=1)

    def samples(self) -> Iterator[dict[str, Any]]:
        """The label set's sample dicts, images resolved under :attr:`image_root`."""
        return self.labels.samples(self.image_root)

    def check_images(self) -> None:
        """Raise :class:`InputError` listing the images absent from :attr:`image_root`."""
        self.labels.check_images(self.image_root)


def list_benchmarks(config_dir: str | os.PathLike | None = None) -> list[str]:
    """Names of the registered benchmarks (the YAML files in ``<config_dir>/benchmarks``), sorted."""
    folder = Path(config_dir or CONFIG_DIR) / "benchmarks"
    return sorted(path.stem for path in folder.glob("*.yaml"))


def missing_file_reason(what: str, path: Path) -> str:
    """``"no <what>"``, saying where a relative path was looked for (configs name paths relative to the repository)."""
    if path.is_absolute():
        return f"no {what}"
    return f"no {what} (a relative path is read from the current folder, {Path.cwd()})"


def read_prompt_file(path: str | os.PathLike) -> list[list[str]]:
    """Read a prompt file: one line per class, `` | ``-separated alternatives, ``#`` comments and blank lines skipped.

    Raises:
        FileNotFoundError: no file at ``path``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(2, missing_file_reason("prompt file", path), str(path))
    lines = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines()]
    return [
        [text.strip() for text in line.split(_PROMPT_SEPARATOR.strip()) if text.strip()]
        for line in lines
        if line and not line.startswith("#")
    ]


def _expand(value: str, data_root: Path, config: Path, key: str) -> Path:
    text = str(value)
    if "{" in text.replace("{data_root}", ""):
        raise InputError(f"{config}: {key} {text!r} has a placeholder other than {{data_root}}")
    return Path(text.replace("{data_root}", str(data_root)))


def _source(value: str | list[str], data_root: Path, config: Path, key: str) -> Path:
    """A source path; a list names the file as different releases do, and the first one present is used."""
    if not isinstance(value, list):
        return _expand(value, data_root, config, key)
    candidates = [_expand(item, data_root, config, key) for item in value]
    present = next((path for path in candidates if path.exists()), None)
    if present is None:
        raise InputError(f"{config}: {key}: none of {[str(path) for path in candidates]} exists (the names releases "
                         "of this dataset use)")
    return present


def _read_config(name: str, config_dir: Path) -> tuple[Path, dict[str, Any]]:
    names = list_benchmarks(config_dir)
    if name not in names:
        raise KeyError(f"Wrong benchmark name `{name}`, available benchmarks: {names}")
    path = config_dir / "benchmarks" / f"{name}.yaml"
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise InputError(f"{path} is not valid YAML: {err}") from err
    if not isinstance(config, dict):
        raise InputError(f"{path}: expected a mapping at the top level")
    unknown = sorted(set(config) - _KEYS)
    missing = [key for key in _REQUIRED if key not in config]
    if unknown or missing:
        raise InputError(f"{path}: unknown key(s) {unknown}, missing key(s) {missing}; allowed keys: {sorted(_KEYS)}")
    if config["name"] != name:
        raise InputError(f"{path}: name {config['name']!r} differs from the file name {name!r}")
    if config["adapter"] not in ADAPTERS:
        raise InputError(f"{path}: adapter {config['adapter']!r} is not one of {sorted(ADAPTERS)}")
    return path, config


def _prompts(config: dict[str, Any], key: str, path: Path, config_dir: Path, classes: list[str]) -> list[list[str]]:
    prompt_path = config_dir / config[key]
    prompts = read_prompt_file(prompt_path)
    if len(prompts) != len(classes):
        raise InputError(f"{prompt_path}: {len(prompts)} prompt lines for the {len(classes)} classes of {path}")
    return prompts


def load_benchmark(
    name: str, data_root: str | os.PathLike, check_counts: bool = True, config_dir: str | os.PathLike | None = None
) -> Benchmark:
    """Load a registered benchmark: read its label files under ``data_root`` and check its counts.

    Args:
        name: a name from :func:`list_benchmarks`, e.g. ``"chestxray14"``.
        data_root: folder substituted for ``{data_root}`` in the YAML's paths.
        check_counts: compare the image and class counts with the YAML's ``expected``. Defaults to True; pass
            False for a partial download (the counts are still logged).
        config_dir: folder holding ``benchmarks/`` and ``prompts/``. Defaults to the repository's ``configs/``.

    Returns:
        The :class:`Benchmark`; images are not opened (see :meth:`Benchmark.check_images`).

    Raises:
        KeyError: unknown name (the message lists the available names).
        InputError: a malformed YAML, a prompt file whose line count differs from the class count, adapter classes
            that differ from the YAML's, or (``check_counts``) an image or class count that differs from the
            expected one (both numbers given).
    """
    config_dir = Path(config_dir or CONFIG_DIR)
    path, config = _read_config(name, config_dir)
    data_root = Path(data_root)
    sources = {key: _source(value, data_root, path, f"sources.{key}") for key, value in config["sources"].items()}
    classes = list(config["classes"])
    display = list(config.get("display_names") or classes)
    if len(display) != len(classes):
        raise InputError(f"{path}: {len(display)} display_names for {len(classes)} classes")
    prompts = _prompts(config, "prompts", path, config_dir, classes)
    negatives = None
    if config.get("negative_prompts"):
        negatives = _prompts(config, "negative_prompts", path, config_dir, classes)
    labels = read_labels(config["adapter"], sources, config.get("options") or {}, f"{path}: options")
    extra = [c for c in labels.class_names if c not in classes]
    if extra or [c for c in classes if c in labels.class_names] != labels.class_names:
        raise InputError(f"{path}: the adapter gives classes {labels.class_names}, not a subset of `classes` in order")
    keep = [classes.index(c) for c in labels.class_names]
    counts = {"images": len(labels), "classes": len(labels.class_names)}
    logger.info("benchmark %s: %d images, %d classes from %s", name, counts["images"], counts["classes"], sources)
    for key, found in counts.items():
        expected = config["expected"].get(key)
        if check_counts and expected is not None and int(expected) != found:
            raise InputError(
                f"benchmark {name}: expected {expected} {key} ({path}), found {found} in {sources['labels']}; "
                "pass --no-check-counts (check_counts=False in Python) to load a partial or different copy"
            )
    return Benchmark(
        name=config["name"],
        labels=labels,
        class_names=list(labels.class_names),
        display_names=[display[j] for j in keep],
        prompts=[prompts[j] for j in keep],
        negative_prompts=[negatives[j] for j in keep] if negatives else None,
        image_root=_expand(config["images"], data_root, path, "images"),
        label_rule=str(config["label_rule"]),
        published=list(config.get("published") or []),
        config=path,
    )
