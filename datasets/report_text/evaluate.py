"""Precision and recall of the rule-based aligner on hand-labelled sentences.

Input: a CSV with columns ``sentence``, ``finding``, ``status`` (see ``tests/data/report_sentences/README.md``): one
row per (sentence, class) label, status ``positive``/``negative``/``uncertain``/``absent``; every class without a row
for a sentence is ``absent``. Each (sentence, class) pair is compared:

* **per finding**: a prediction counts when the class is mentioned (status not ``absent``); it is correct when its
  status equals the label. Precision = correct / predicted mentions, recall = correct / labelled mentions.
* **per status** (positive, negative, uncertain): precision and recall of that status over all pairs.

Usage::

    python -m datasets.report_text.evaluate tests/data/report_sentences/hand_labelled.csv --markdown

prints the tables that ``docs/prompt_alignment.md`` shows (a test checks that the document holds this output).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from datasets.cli_utils import run_cli
from datasets.errors import InputError
from datasets.labels.base import read_csv_table, require_columns
from datasets.report_text.lexicon import LEXICONS, Lexicon, get_lexicon
from datasets.report_text.rules import ABSENT, STATUSES, sentence_statuses

__all__ = ["LabelledSentences", "Score", "Evaluation", "read_labelled", "evaluate", "to_markdown", "main"]


@dataclass
class LabelledSentences:
    """Hand labels: ``labels[sentence] = {class: status}`` (absent classes left out), in file order."""

    path: Path
    labels: dict[str, dict[str, str]]
    n_rows: int


@dataclass
class Score:
    """Precision, recall and F1 of one category; ``precision`` is None when nothing was predicted."""

    category: str
    support: int
    predicted: int
    correct: int
    precision: float | None
    recall: float | None
    f1: float


@dataclass
class Evaluation:
    """Scores of one labelled file."""

    source: str
    n_sentences: int
    n_labels: int
    exact_sentences: int
    findings: list[Score]
    statuses: list[Score]
    macro_f1_findings: float
    macro_f1_statuses: float


def read_labelled(path: str | os.PathLike, lexicon: Lexicon) -> LabelledSentences:
    """Read a hand-labelled sentence CSV.

    Raises:
        InputError: a missing column, an unknown status or class, or two different labels for one pair.
    """
    path = Path(path)
    header, rows = read_csv_table(path)
    require_columns(path, header, ["sentence", "finding", "status"])
    labels: dict[str, dict[str, str]] = {}
    allowed = (*STATUSES, ABSENT)
    for row in rows:
        sentence, finding, status = (row.values[key].strip() for key in ("sentence", "finding", "status"))
        if status not in allowed:
            raise InputError(f"{path}: row {row.number}, column 'status': {status!r} is not one of {allowed}")
        if finding and finding not in lexicon.classes:
            raise InputError(
                f"{path}: row {row.number}, column 'finding': {finding!r} is not a class of lexicon "
                f"{lexicon.name!r}: {list(lexicon.classes)}"
            )
        sentence_labels = labels.setdefault(sentence, {})
        if not finding or status == ABSENT:
            continue
        if sentence_labels.get(finding, status) != status:
            raise InputError(f"{path}: row {row.number}: {finding!r} labelled twice with different statuses")
        sentence_labels[finding] = status
    return LabelledSentences(path, labels, len(rows))


def _score(category: str, support: int, predicted: int, correct: int) -> Score:
    precision = correct / predicted if predicted else None
    recall = correct / support if support else None
    f1 = 2 * correct / (support + predicted) if support + predicted else 0.0
    return Score(category, support, predicted, correct, precision, recall, f1)


def evaluate(labelled: LabelledSentences, lexicon: Lexicon) -> Evaluation:
    """Compare the rule-based statuses with the hand labels (see the module docstring for the definitions)."""
    pairs = []  # (class, gold, predicted)
    exact = 0
    for sentence, gold in labelled.labels.items():
        predicted = sentence_statuses(sentence, lexicon)
        exact += predicted == gold
        pairs += [(finding, gold.get(finding, ABSENT), predicted.get(finding, ABSENT)) for finding in lexicon.classes]
    findings = []
    for finding in lexicon.classes:
        mine = [(g, p) for f, g, p in pairs if f == finding]
        support, predicted = sum(g != ABSENT for g, _ in mine), sum(p != ABSENT for _, p in mine)
        if support or predicted:
            findings.append(_score(finding, support, predicted, sum(p != ABSENT and p == g for g, p in mine)))
    statuses = [
        _score(status, sum(g == status for _, g, _ in pairs), sum(p == status for _, _, p in pairs),
               sum(g == p == status for _, g, p in pairs))
        for status in STATUSES
    ]
    return Evaluation(
        str(labelled.path), len(labelled.labels), sum(len(gold) for gold in labelled.labels.values()), exact,
        findings, statuses, sum(s.f1 for s in findings) / len(findings), sum(s.f1 for s in statuses) / len(statuses),
    )


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _table(title: str, scores: list[Score], macro: float) -> list[str]:
    lines = [f"| {title} | labelled | predicted | correct | precision | recall | F1 |", "|---|" + "---:|" * 6]
    lines += [
        f"| {s.category} | {s.support} | {s.predicted} | {s.correct} | {_number(s.precision)} | {_number(s.recall)} "
        f"| {s.f1:.3f} |"
        for s in scores
    ]
    lines.append(f"| **macro F1** | | | | | | **{macro:.3f}** |")
    return lines


def to_markdown(result: Evaluation) -> str:
    """The evaluation as Markdown: a summary line, a per-finding table and a per-status table."""
    lines = [
        f"`{Path(result.source).name}`: {result.n_sentences} sentences, {result.n_labels} labels; "
        f"{result.exact_sentences}/{result.n_sentences} sentences fully correct.",
        "",
        *_table("finding", result.findings, result.macro_f1_findings),
        "",
        *_table("status", result.statuses, result.macro_f1_statuses),
    ]
    return "\n".join(lines)


def _main(args: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m datasets.report_text.evaluate",
        description="Per-finding and per-status precision/recall of the rule-based aligner on hand-labelled sentences.",
    )
    parser.add_argument("labels", type=Path, nargs="+", help="CSV files with columns sentence, finding, status")
    parser.add_argument("--lexicon", default="chestxray14", choices=sorted(LEXICONS), help="default: chestxray14")
    parser.add_argument("--markdown", action="store_true", help="print Markdown tables instead of JSON")
    options = parser.parse_args(args)
    lexicon = get_lexicon(options.lexicon)
    results = [evaluate(read_labelled(path, lexicon), lexicon) for path in options.labels]
    if options.markdown:
        print("\n\n".join(to_markdown(result) for result in results))
    else:
        print(json.dumps([asdict(result) for result in results], indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m datasets.report_text.evaluate``; returns the exit status."""
    return run_cli("python -m datasets.report_text.evaluate", _main, argv)


if __name__ == "__main__":
    sys.exit(main())
