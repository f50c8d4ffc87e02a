"""The batch job shared by ``carzero align-prompts`` and ``brgsa summarize``: report table in, sentence CSV out.

Input: a ``pairs-1`` manifest (key column ``image``) or a CT-RATE report table (key column ``VolumeName``), told
apart by the header (:func:`read_report_table`). Output: a CSV keyed like the input, written with
:class:`~datasets.io.ResumableRowWriter` (a killed job continues where it stopped), with the columns
:data:`OUTPUT_COLUMNS` after the key:

=================  ============================================================================================
``sentences``      JSON list of the sentences
``source``         ``llm`` or ``rules``: the path that made this row; ``none`` for an empty report (``[]``)
``fallback``       ``true`` when the LLM output was unusable and the rules made the row
``aligner``        the aligner asked for: ``rules`` or ``llm``
``model``          model folder or hub id (empty for the rules)
``prompt_sha256``  SHA-256 of the instruction template (empty for the rules)
``config_sha256``  SHA-256 of every config value that shapes the output (:attr:`PromptConfig.output_sha256`)
``rules_version``  version of the rule-based aligner (:data:`~datasets.report_text.rules.RULES_VERSION`)
``report_sha256``  SHA-256 of the report text the row was made from (the ``--section`` chosen)
=================  ============================================================================================

Rows sharing one report text (several images of a MIMIC-CXR study) are aligned once. A rerun continues the file only
where it would write the same thing: a stored row whose report text, aligner, model, config or rules version differs
from this run's is refused with its row number, so one file never mixes two runs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from datasets.errors import InputError
from datasets.io import ResumableRowWriter
from datasets.labels.base import read_csv_table
from datasets.report_text.align import Alignment, RuleAligner
from datasets.report_text.config import PromptConfig, load_prompt_config
from datasets.report_text.lexicon import get_lexicon
from datasets.report_text.rules import RULES_VERSION
from datasets.reports import SECTIONS, ReportSet, read_ctrate_reports, read_pairs_manifest

__all__ = [
    "OUTPUT_COLUMNS", "BatchSummary", "read_report_table", "add_arguments", "build_aligner", "run_batch",
    "run_command",
]

OUTPUT_COLUMNS = (
    "sentences", "source", "fallback", "aligner", "model", "prompt_sha256", "config_sha256", "rules_version",
    "report_sha256",
)


@dataclass
class BatchSummary:
    """What one run wrote."""

    written: int = 0
    skipped: int = 0
    llm: int = 0
    fallback: int = 0
    empty: list[str] = field(default_factory=list)


def read_report_table(
    path: str | os.PathLike, section: str = "findings+impression", on_empty: str = "error"
) -> tuple[ReportSet, str]:
    """Read a ``pairs-1`` manifest or a CT-RATE report table, whichever the header shows.

    ``on_empty``: what to do with a row whose ``section`` is empty (see :func:`datasets.reports.read_pairs_manifest`).

    Returns:
        The reports and the key column name (``"image"`` or ``"VolumeName"``).

    Raises:
        InputError: a header of neither format (and the readers' own errors).
    """
    path = Path(path)
    header, _ = read_csv_table(path)
    if "format_version" in header:
        return read_pairs_manifest(path, section, on_empty=on_empty), "image"
    if "VolumeName" in header:
        return read_ctrate_reports(path, section=section, layout="flat", on_empty=on_empty), "VolumeName"
    raise InputError(
        f"{path}: neither a pairs-1 manifest (needs a 'format_version' column) nor a CT-RATE report table (needs "
        f"'VolumeName'); the header has {header}"
    )


def add_arguments(parser: argparse.ArgumentParser, default_config: Path) -> None:
    """Add the arguments both commands share."""
    parser.add_argument("reports", type=Path, help="report table: a pairs-1 manifest or a CT-RATE reports CSV")
    parser.add_argument("--out", type=Path, required=True, help="output CSV (continued if it exists)")
    parser.add_argument("--aligner", choices=("rules", "llm"), default="rules", help="default: rules")
    parser.add_argument("--model", help="--aligner llm: local folder (or cached hub id) of a causal language model")
    parser.add_argument("--config", type=Path, default=default_config, help=f"prompt config; default: {default_config}")
    parser.add_argument("--batch-size", type=int, default=8, help="reports per generate call; default: 8")
    parser.add_argument("--section", choices=SECTIONS, default="findings+impression",
                        help="report text to use; default: findings+impression")
    parser.add_argument("--device", default="cpu", help="torch device of the LLM; default: cpu")
    parser.add_argument("--dtype", choices=("bfloat16", "float16", "float32"), help="LLM weights dtype")
    parser.add_argument("--trust-remote-code", action="store_true", help="allow code shipped with the model to run")


def build_aligner(options: argparse.Namespace, config: PromptConfig) -> RuleAligner | object:
    """The rule-based aligner, or an :class:`~datasets.report_text.llm.LLMAligner` falling back to it."""
    rules = RuleAligner(get_lexicon(config.lexicon), config.style, config.uncertain)
    if options.aligner == "rules":
        if options.model:
            raise InputError("--model is only used with --aligner llm")
        return rules
    if not options.model:
        raise InputError("--aligner llm needs --model (a local model folder or a cached hub id)")
    from datasets.report_text.llm import LLMAligner

    return LLMAligner.from_pretrained(
        options.model, config, rules, batch_size=options.batch_size, trust_remote_code=options.trust_remote_code,
        device=options.device, dtype=options.dtype,
    )


def run_batch(
    reports: ReportSet,
    key: str,
    align: Callable[[list[str]], list[Alignment]],
    out: str | os.PathLike,
    provenance: dict[str, str],
    batch_size: int = 8,
    allow_empty: bool = True,
) -> BatchSummary:
    """Align every report not yet in ``out`` and append one row per image or volume.

    Args:
        reports: the report table.
        key: output key column name.
        align: maps a list of report texts to one :class:`Alignment` each.
        out: output CSV.
        provenance: the ``aligner``, ``model``, ``prompt_sha256`` and ``config_sha256`` values; with the report's
            hash and the rules version, a stored row must hold the same values to be kept on a rerun.
        batch_size: distinct reports per ``align`` call. Defaults to 8.
        allow_empty: write an empty list for a report that yields no sentence; when False, such a report is an
            error. Defaults to True. An empty report text (read with ``on_empty="keep"``) is not passed to ``align``:
            its row gets an empty list with source ``"none"``.

    Raises:
        InputError: ``batch_size`` < 1, (``allow_empty=False``) a report yielding no sentence, or ``out`` holding a
            row made from another report text or with other settings: the message names its row; the rows before
            it stay written.
    """
    if batch_size < 1:
        raise InputError(f"--batch-size must be >= 1, got {batch_size}")
    summary = BatchSummary()
    pinned = {**provenance, "rules_version": RULES_VERSION}
    report_sha256 = [hashlib.sha256(text.encode("utf-8")).hexdigest() for text in reports.texts]
    with ResumableRowWriter(out, [key, *OUTPUT_COLUMNS]) as writer:
        todo = [
            i for i, image_id in enumerate(reports.image_ids)
            if not writer.done(image_id, {**pinned, "report_sha256": report_sha256[i]})
        ]
        summary.skipped = len(reports) - len(todo)
        by_text: dict[str, list[int]] = {}
        for i in todo:
            by_text.setdefault(reports.texts[i], []).append(i)
        texts = list(by_text)
        with tqdm(total=len(todo), unit="report", desc=Path(out).name, disable=None) as progress:
            for first in range(0, len(texts), batch_size):
                chunk = texts[first:first + batch_size]
                reported = [text for text in chunk if text]
                results = dict(zip(reported, align(reported))) if reported else {}
                for text in chunk:
                    result = results[text] if text else Alignment([], "none")
                    for i in by_text[text]:
                        row_pinned = {**pinned, "report_sha256": report_sha256[i]}
                        _write_row(writer, reports, i, key, result, row_pinned, allow_empty, summary)
                        progress.update(1)
    return summary


def _write_row(
    writer: ResumableRowWriter, reports: ReportSet, i: int, key: str, result: Alignment, pinned: dict[str, str],
    allow_empty: bool, summary: BatchSummary,
) -> None:
    """Append row ``i``; ``pinned`` holds its provenance columns (what a rerun must match to keep it)."""
    image_id = reports.image_ids[i]
    if not result.sentences:
        if not allow_empty:
            raise InputError(
                f"{reports.source}: row {reports.meta[i]['row']} ({key} {image_id!r}): the report yields no "
                f"sentence ({result.source} path); pass --allow-empty to write an empty list instead"
            )
        summary.empty.append(image_id)
    writer.write({
        key: image_id, "sentences": json.dumps(result.sentences), "source": result.source,
        "fallback": str(result.fallback).lower(), **pinned,
    })
    summary.written += 1
    summary.llm += result.source == "llm"
    summary.fallback += result.fallback


def run_command(options: argparse.Namespace, allow_empty: bool) -> BatchSummary:
    """Load the config and the reports, build the aligner and run the batch (the body of both commands)."""
    config = load_prompt_config(options.config)
    reports, key = read_report_table(options.reports, options.section, on_empty="keep" if allow_empty else "error")
    aligner = build_aligner(options, config)
    provenance = {"aligner": options.aligner, "model": "", "prompt_sha256": "", "config_sha256": config.output_sha256}
    if options.aligner == "llm":
        provenance.update(model=options.model, prompt_sha256=config.sha256)
    return run_batch(reports, key, aligner.align, options.out, provenance, options.batch_size, allow_empty)
