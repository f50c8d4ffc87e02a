"""From per-report finding statuses to training sentences: CARZero's "There is <finding>" and BrgSA's summaries.

* CARZero (research notes ``carzero.md`` §2.1) trains on LLM-rewritten impressions in its inference prompt's form,
  "There is <finding>": :func:`carzero_sentences` writes one per positive class, with the class named as in the
  benchmark prompt file ("There is Pleural Effusion"), and nothing for negatives (CARZero has no negative prompts).
* BrgSA (``brgsa.md`` §1.3) trains on a list of short finding sentences per report, sampling several per volume:
  :func:`brgsa_sentences` writes "There is <finding>." per positive class and "No <finding>." per stated negative.

Uncertain findings follow a policy: ``"drop"`` (default), ``"positive"`` (written like a positive), or for BrgSA
``"hedge"`` ("Possible <finding>.").
"""

from __future__ import annotations

from dataclasses import dataclass

from datasets.errors import InputError
from datasets.report_text.lexicon import Lexicon
from datasets.report_text.rules import RULES_VERSION, report_statuses

__all__ = [
    "STYLES",
    "UNCERTAIN_POLICIES",
    "Alignment",
    "carzero_sentences",
    "brgsa_sentences",
    "RuleAligner",
]

STYLES = ("carzero", "brgsa")
UNCERTAIN_POLICIES = {"carzero": ("drop", "positive"), "brgsa": ("drop", "positive", "hedge")}


@dataclass(frozen=True)
class Alignment:
    """The sentences made from one report and which path made them.

    Attributes:
        sentences: the output sentences.
        source: ``"llm"`` or ``"rules"``.
        fallback: True when the LLM's output was unusable and the rules made the row.
        raw: the LLM's raw output (None for the rules path).
    """

    sentences: list[str]
    source: str
    fallback: bool = False
    raw: str | None = None


def _check_policy(style: str, uncertain: str) -> None:
    if style not in STYLES:
        raise InputError(f"unknown style {style!r}; choose from: {', '.join(STYLES)}")
    if uncertain not in UNCERTAIN_POLICIES[style]:
        raise InputError(
            f"uncertain={uncertain!r} is not a policy of style {style!r}; choose from: "
            f"{', '.join(UNCERTAIN_POLICIES[style])}"
        )


def _lower_first(name: str) -> str:
    return name if name[:2].isupper() else name[:1].lower() + name[1:]


def carzero_sentences(statuses: dict[str, str], lexicon: Lexicon, uncertain: str = "drop") -> list[str]:
    """CARZero prompt-aligned sentences of one report.

    Args:
        statuses: ``{class: status}`` from :func:`~datasets.report_text.rules.report_statuses`.
        lexicon: the lexicon that produced ``statuses`` (it names the classes).
        uncertain: ``"drop"`` or ``"positive"``. Defaults to "drop".

    Returns:
        "There is <name>" per positive class in class order; ["There is No Finding"] for a report with no positive
        class when the lexicon has a "No Finding" class; else an empty list.

    Example::

        >>> from datasets.report_text.lexicon import get_lexicon
        >>> lexicon = get_lexicon("chestxray14")
        >>> carzero_sentences({"Effusion": "positive", "Pneumonia": "uncertain"}, lexicon, uncertain="positive")
        ['There is Pleural Effusion', 'There is Pneumonia']
    """
    _check_policy("carzero", uncertain)
    wanted = {"positive"} | ({"uncertain"} if uncertain == "positive" else set())
    sentences = [
        f"There is {lexicon.display_name(finding)}"
        for finding in lexicon.classes
        if finding != lexicon.no_finding and statuses.get(finding) in wanted
    ]
    if not sentences and lexicon.no_finding is not None and statuses.get(lexicon.no_finding) == "positive":
        sentences = [f"There is {lexicon.display_name(lexicon.no_finding)}"]
    return sentences


def brgsa_sentences(
    statuses: dict[str, str], lexicon: Lexicon, uncertain: str = "drop", negatives: bool = True
) -> list[str]:
    """BrgSA-style short finding sentences of one report: positives first, then stated negatives.

    Args:
        statuses: ``{class: status}`` from :func:`~datasets.report_text.rules.report_statuses`.
        lexicon: the lexicon that produced ``statuses``.
        uncertain: ``"drop"``, ``"positive"`` or ``"hedge"``. Defaults to "drop".
        negatives: write "No <finding>." for classes the report negates. Defaults to True.

    Example::

        >>> from datasets.report_text.lexicon import get_lexicon
        >>> brgsa_sentences({"Lung nodule": "positive", "Pleural effusion": "negative"}, get_lexicon("ct-rate"))
        ['There is Lung nodule.', 'No pleural effusion.']
    """
    _check_policy("brgsa", uncertain)
    present, hedged, absent = [], [], []
    for finding in lexicon.classes:
        if finding == lexicon.no_finding:
            continue
        status, name = statuses.get(finding), lexicon.display_name(finding)
        if status == "positive" or (status == "uncertain" and uncertain == "positive"):
            present.append(f"There is {name}.")
        elif status == "uncertain" and uncertain == "hedge":
            hedged.append(f"Possible {_lower_first(name)}.")
        elif status == "negative" and negatives:
            absent.append(f"No {_lower_first(name)}.")
    return present + hedged + absent


class RuleAligner:
    """The model-free aligner: report -> statuses (:mod:`datasets.report_text.rules`) -> sentences.

    Args:
        lexicon: classes and their term patterns.
        style: ``"carzero"`` or ``"brgsa"``.
        uncertain: policy for uncertain findings (see :data:`UNCERTAIN_POLICIES`). Defaults to "drop".
        negatives: BrgSA style only: write stated negatives. Defaults to True.

    Raises:
        InputError: an unknown style or policy.
    """

    version = RULES_VERSION

    def __init__(self, lexicon: Lexicon, style: str, uncertain: str = "drop", negatives: bool = True) -> None:
        _check_policy(style, uncertain)
        self.lexicon = lexicon
        self.style = style
        self.uncertain = uncertain
        self.negatives = negatives

    def sentences(self, report: str) -> list[str]:
        """The output sentences of one report."""
        statuses = report_statuses(report, self.lexicon)
        if self.style == "carzero":
            return carzero_sentences(statuses, self.lexicon, self.uncertain)
        return brgsa_sentences(statuses, self.lexicon, self.uncertain, self.negatives)

    def align(self, reports: list[str]) -> list[Alignment]:
        """One :class:`Alignment` (source ``"rules"``) per report."""
        return [Alignment(self.sentences(report), "rules") for report in reports]
