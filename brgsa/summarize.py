"""``brgsa summarize``: summarise each report into short finding sentences for BrgSA training.

BrgSA trains on GPT-4o summaries of CT-RATE reports, a list of short sentences per report from which several are
sampled per volume (research notes ``brgsa.md`` §1.3, §3.3). This command writes such lists for every row of a
report table, with the rule-based aligner (:mod:`datasets.report_text.rules`, model-free, the default: "There is
<finding>." per abnormality, "No <finding>." per stated negative) or a local causal LM (``--aligner llm --model
PATH``) that falls back to the rules row by row. Output columns: the key (``VolumeName`` for CT-RATE), ``sentences``
(a JSON list) and provenance (:mod:`datasets.report_text.batch`).

A report that yields no sentence, or whose section is empty, is an error naming its row, unless ``--allow-empty``
(then an empty list is written and counted; train with ``skip_empty_reports: true`` to leave those volumes out).
Reports must stay on local models; see ``docs/prompt_alignment.md``.

Example::

    brgsa summarize validation_reports.csv --out summaries.csv
    brgsa summarize validation_reports.csv --out summaries.csv --aligner llm --model /models/qwen2.5-7b-instruct
"""

from __future__ import annotations

import argparse

from datasets.cli_utils import setup_logging
from datasets.report_text.batch import add_arguments, run_command
from datasets.report_text.lexicon import PROMPT_DIR

__all__ = ["DEFAULT_CONFIG", "build_parser", "main"]

DEFAULT_CONFIG = PROMPT_DIR / "llm_summarize_brgsa.yaml"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``brgsa summarize``."""
    parser = argparse.ArgumentParser(
        prog="brgsa summarize",
        description="Summarise every report of a CT-RATE (or pairs-1) table into short finding sentences.",
    )
    add_arguments(parser, DEFAULT_CONFIG)
    parser.add_argument("--allow-empty", action="store_true",
                        help="write an empty list for a report that is empty or yields no sentence, instead of "
                        "failing (training leaves such rows out with data.skip_empty_reports: true)")
    return parser


def main(args: list[str]) -> int:
    """Run ``brgsa summarize`` on the argument list (without the subcommand name); returns the exit status.

    Bad input raises :class:`~datasets.errors.InputError`; the ``brgsa`` dispatcher turns it into exit status 2.
    """
    options = build_parser().parse_args(args)
    setup_logging()
    summary = run_command(options, allow_empty=options.allow_empty)
    print(
        f"wrote {summary.written} rows to {options.out} ({summary.skipped} already there; {summary.llm} from the LLM, "
        f"{summary.fallback} rule fallbacks, {len(summary.empty)} empty)"
    )
    return 0
