"""Model-free finding extraction from report text: lexicon matches, negation, uncertainty and pseudo-negation.

The method is NegEx-style (Chapman et al., J Biomed Inform 2001) with the refinements the CheXpert labeler made
popular (Irvin et al., AAAI 2019), written for medvl:

1. The report is split into sentences (:func:`~datasets.report_text.sentences.split_sentences`).
2. Each lexicon term match is a *mention* of a class (:mod:`datasets.report_text.lexicon`).
3. Cues are found in one left-to-right pass; at each position the first listed pattern wins, so the longer phrase is
   tried first ("cannot be excluded" before "not", "no longer seen" before "no"):

   * **pseudo-negations** ("no change in", "no increase in", "without interval change", "not resolved") are matched
     only so that their "no"/"not" does not negate: "no change in the left effusion" leaves the effusion positive;
   * **uncertainty** cues ("cannot exclude", "possible", "may represent", "versus", ...);
   * **negation** cues ("no", "without", "free of", "negative for", "clear of", "absence of", "resolved", ...);
   * **scope terminators** ("but", "however", "although", "which", ";", "consistent with", ", with", ...).

4. A cue acts forward (``pre``), backward (``post``) or both, up to :data:`SCOPE_WORDS` words and never across a
   terminator. A mention takes the status of the nearest cue acting on it, else ``positive``.
5. Fixed statements ("heart size is normal", "the lungs are clear") have their own status.
6. Per sentence and per report, a class keeps its strongest status: positive over uncertain over negative.

``"no new consolidation"`` is a negation (see ``tests/data/report_sentences/README.md`` for the conventions).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from datasets.report_text.lexicon import Lexicon
from datasets.report_text.sentences import split_sentences

__all__ = [
    "RULES_VERSION",
    "STATUSES",
    "ABSENT",
    "SCOPE_WORDS",
    "Mention",
    "find_mentions",
    "sentence_statuses",
    "report_statuses",
    "strongest",
]

RULES_VERSION = "medvl-rules-1"
STATUSES = ("positive", "uncertain", "negative")  # strongest first
ABSENT = "absent"
SCOPE_WORDS = 8

# (pattern, kind, direction); order matters: at one position the first pattern that matches wins.
_CUES: tuple[tuple[str, str, str], ...] = (
    (r"\bno (?:significant |interval |appreciable |substantial )*(?:change|increase|decrease|worsening)\b",
     "pseudo", ""),
    (r"\bwithout (?:significant |interval |appreciable )*change\b", "pseudo", ""),
    (r"\bnot (?:significantly |substantially )?changed\b", "pseudo", ""),
    (r"\bnot (?:yet |completely |fully |entirely )?resolved\b", "pseudo", ""),
    (r"\b(?:cannot|can ?not|could not|may not) (?:be )?(?:entirely |completely |definitely )?"
     r"(?:excluded|exclude|ruled out|rule out)\b", "uncertainty", "both"),
    (r"\bnot (?:be )?(?:entirely |completely )?(?:excluded|ruled out)\b", "uncertainty", "post"),
    (r"\b(?:is|are) (?:possible|suspected|questioned|not excluded)\b", "uncertainty", "post"),
    (r"\b(?:possible|possibly|probable|probably|questionable|question of|suspicious for|suspected|"
     r"concerning for|suggestive of|suggesting|may represent|may reflect|may be|might represent|could represent|"
     r"could reflect|could be|likely|most likely|borderline|equivocal|rule out|to exclude|evaluate for|"
     r"differential (?:diagnosis )?includes)\b", "uncertainty", "pre"),
    (r"\b(?:versus|vs\.?)(?=\s)", "uncertainty", "both"),
    (r"\b(?:is|are|was|were) not (?:seen|identified|visualized|present|evident|appreciated|detected|observed|"
     r"demonstrated)\b", "negation", "post"),
    (r"\bnot (?:seen|identified|visualized|present|evident|appreciated|detected|observed|demonstrated)\b",
     "negation", "post"),
    (r"\bno longer (?:seen|visible|visualized|present|evident|identified|appreciated|apparent)\b", "negation", "post"),
    (r"\b(?:has|have) (?:since |now )?(?:resolved|cleared|disappeared)\b", "negation", "post"),
    (r"\b(?:is|are) (?:absent|excluded)\b", "negation", "post"),
    (r"\b(?:free of|negative for|clear of|absence of|resolution of|no evidence of|without evidence of|"
     r"no radiographic evidence of|no signs? of)\b", "negation", "pre"),
    (r"\bresolved\b", "negation", "both"),
    (r"\b(?:no|not|without|nor)\b", "negation", "pre"),
    (r"\b(?:but|however|although|though|which|whereas|while|except|aside from|apart from|other than|"
     r"consistent with|compatible with|secondary to|there (?:is|are))\b|[;:]|,\s*with\b", "terminator", ""),
)
_CUE_PATTERN = re.compile("|".join(f"(?P<c{i}>{pattern})" for i, (pattern, _, _) in enumerate(_CUES)), re.IGNORECASE)
_WORDS = re.compile(r"\w+")
_RANK = {status: rank for rank, status in enumerate(STATUSES)}


@dataclass(frozen=True)
class Mention:
    """One class mention in one sentence.

    Attributes:
        finding: the class name.
        status: ``"positive"``, ``"negative"`` or ``"uncertain"``.
        sentence: the sentence it was found in.
        start: character offset of the match in the sentence.
        end: end offset of the match.
        cue: the cue text that set the status ("" when none did, or for a fixed statement).
    """

    finding: str
    status: str
    sentence: str
    start: int
    end: int
    cue: str = ""


@dataclass(frozen=True)
class _Cue:
    start: int
    end: int
    kind: str
    direction: str
    text: str


def _cues(sentence: str) -> list[_Cue]:
    cues = []
    for match in _CUE_PATTERN.finditer(sentence):
        pattern, kind, direction = _CUES[int(match.lastgroup[1:])]
        cues.append(_Cue(match.start(), match.end(), kind, direction, match.group(0)))
    return cues


def _in_scope(sentence: str, cues: list[_Cue], start: int, end: int) -> bool:
    """Whether the text between offsets ``start`` and ``end`` is short enough and holds no terminator."""
    if end <= start:
        return True
    if len(_WORDS.findall(sentence[start:end])) > SCOPE_WORDS:
        return False
    return not any(cue.kind == "terminator" and cue.start >= start and cue.end <= end for cue in cues)


def _status(sentence: str, cues: list[_Cue], start: int, end: int) -> tuple[str, str]:
    """Status of the mention at ``[start, end)``: that of the nearest cue acting on it, else positive."""
    best: tuple[int, _Cue] | None = None
    for cue in cues:
        if cue.kind not in ("negation", "uncertainty"):
            continue
        if cue.direction in ("pre", "both") and cue.end <= start:
            distance, scope = start - cue.end, (cue.end, start)
        elif cue.direction in ("pre", "both") and start <= cue.start and cue.end <= end:
            distance, scope = 0, (end, end)  # the cue sits inside the mention ("the heart is not enlarged")
        elif cue.direction in ("post", "both") and cue.start >= end:
            distance, scope = cue.start - end, (end, cue.start)
        else:
            continue
        if not _in_scope(sentence, cues, *scope):
            continue
        if best is None or distance < best[0]:
            best = (distance, cue)
    if best is None:
        return "positive", ""
    return ("negative" if best[1].kind == "negation" else "uncertain"), best[1].text


def find_mentions(sentence: str, lexicon: Lexicon) -> list[Mention]:
    """All class mentions in one sentence, with their statuses.

    Args:
        sentence: one sentence (see :func:`~datasets.report_text.sentences.split_sentences`).
        lexicon: the classes and their term patterns.

    Returns:
        Mentions in order of appearance; a class may appear more than once.
    """
    excluded = [m.span() for pattern in lexicon.exclusions for m in re.finditer(pattern, sentence, re.IGNORECASE)]
    cues = _cues(sentence)
    mentions = []
    fixed_spans: dict[str, list[tuple[int, int]]] = {}
    for statement in lexicon.fixed:
        for match in re.finditer(statement.pattern, sentence, re.IGNORECASE):
            fixed_spans.setdefault(statement.finding, []).append(match.span())
            mentions.append(Mention(statement.finding, statement.status, sentence, *match.span()))
    for finding, patterns in lexicon.terms.items():
        for pattern in patterns:
            for match in re.finditer(pattern, sentence, re.IGNORECASE):
                start, end = match.span()
                if any(start < e and s < end for s, e in excluded + fixed_spans.get(finding, [])):
                    continue
                status, cue = _status(sentence, cues, start, end)
                mentions.append(Mention(finding, status, sentence, start, end, cue))
    return sorted(mentions, key=lambda mention: (mention.start, mention.finding))


def strongest(statuses: Iterable[str]) -> str:
    """The strongest of some statuses (positive > uncertain > negative); ``"absent"`` when there are none."""
    ranked = sorted(statuses, key=_RANK.__getitem__)
    return ranked[0] if ranked else ABSENT


def sentence_statuses(sentence: str, lexicon: Lexicon) -> dict[str, str]:
    """``{class: status}`` for the classes one sentence mentions (strongest status per class)."""
    found: dict[str, list[str]] = {}
    for mention in find_mentions(sentence, lexicon):
        found.setdefault(mention.finding, []).append(mention.status)
    return {finding: strongest(statuses) for finding, statuses in found.items()}


def report_statuses(text: str, lexicon: Lexicon) -> dict[str, str]:
    """``{class: status}`` for every class of the lexicon over a whole report.

    Each class keeps its strongest status over the sentences; unmentioned classes are ``"absent"``. When the lexicon
    has a "No Finding" class, it is ``"positive"`` exactly when no other class is positive or uncertain (the CheXpert
    labeler's convention), whatever the sentences said about it.

    Args:
        text: the report.
        lexicon: the classes and their term patterns.

    Example::

        >>> from datasets.report_text.lexicon import get_lexicon
        >>> statuses = report_statuses("No change in the left effusion. No pneumothorax.", get_lexicon("chestxray14"))
        >>> statuses["Effusion"], statuses["Pneumothorax"], statuses["Edema"]
        ('positive', 'negative', 'absent')
    """
    found: dict[str, list[str]] = {}
    for sentence in split_sentences(text):
        for finding, status in sentence_statuses(sentence, lexicon).items():
            found.setdefault(finding, []).append(status)
    statuses = {finding: strongest(found.get(finding, ())) for finding in lexicon.classes}
    if lexicon.no_finding is not None:
        others = [status for finding, status in statuses.items() if finding != lexicon.no_finding]
        statuses[lexicon.no_finding] = "absent" if {"positive", "uncertain"} & set(others) else "positive"
    return statuses
