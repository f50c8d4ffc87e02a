"""``carzero align-prompts``: rewrite report impressions into CARZero's "There is <finding>" form.

CARZero trains on LLM-rewritten reports in the form of its zero-shot prompts (research notes ``carzero.md`` §2.1).
This command writes those sentences for every row of a report table, with the rule-based aligner
(:mod:`datasets.report_text.rules`, model-free, the default) or a local causal LM (``--aligner llm --model PATH``)
that falls back to the rules row by row. See :mod:`datasets.report_text.batch` for the output columns and
``docs/prompt_alignment.md`` for the method and its measured precision and recall.

Reports must stay on local models: MIMIC-CXR's data-use agreement forbids sending them to external services.

Example::

    carzero align-prompts mimic_pairs.csv --out aligned.csv
    carzero align-prompts mimic_pairs.csv --out aligned.csv --aligner llm --model /models/qwen2.5-7b-instruct
"""

from __future__ import annotations

import argparse

from datasets.cli_utils import setup_logging
from datasets.report_text.batch import add_arguments, run_command
from datasets.report_text.lexicon import PROMPT_DIR

__all__ = ["DEFAULT_CONFIG", "build_parser", "main"]

DEFAULT_CONFIG = PROMPT_DIR / "llm_align_carzero.yaml"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``carzero align-prompts``."""
    parser = argparse.ArgumentParser(
        prog="carzero align-prompts",
        description="Write CARZero 'There is <finding>' sentences for every report of a pairs-1 or CT-RATE table.",
    )
    add_arguments(parser, DEFAULT_CONFIG)
    return parser


def main(args: list[str]) -> int:
    """Run ``carzero align-prompts`` on the argument list (without the subcommand name); returns the exit status.

    Bad input raises :class:`~datasets.errors.InputError`; the ``carzero`` dispatcher turns it into exit status 2.
    """
    options = build_parser().parse_args(args)
    setup_logging()
    summary = run_command(options, allow_empty=True)
    print(
        f"wrote {summary.written} rows to {options.out} ({summary.skipped} already there; {summary.llm} from the LLM, "
        f"{summary.fallback} rule fallbacks, {len(summary.empty)} with no sentence)"
    )
    return 0

