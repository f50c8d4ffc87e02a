"""Sentence splitting for radiology reports (MIMIC-CXR and CT-RATE style).

Reports wrap lines in the middle of sentences, number their impressions ("1. ... 2. ..."), carry section headers
("FINDINGS:", "IMPRESSION:") and measurements with decimal points ("2.1 cm"). :func:`split_sentences` handles these
with regular expressions only, so the rule-based aligner and the LLM fallback split the same way everywhere.
"""

from __future__ import annotations

import re

__all__ = ["split_sentences"]

_PARAGRAPH = re.compile(r"\n\s*\n")
_BOUNDARY = re.compile(r"(?<=[.!?])\s+")
_HEADER = re.compile(r"^\s*[A-Z][A-Z /&-]{2,40}:\s*")
_ENUMERATION = re.compile(r"^\s*(?:\(?\d{1,2}[.)]|[-*\u2022])\s+")
_ABBREVIATION = re.compile(r"(?:^|\s)(?:dr|vs|approx|e\.g|i\.e|a\.m|p\.m|cf|fig|mr|mrs|ms|st)\.$", re.IGNORECASE)
_WORD = re.compile(r"[A-Za-z]")


def split_sentences(text: str) -> list[str]:
    """Split a report into sentences.

    Single newlines are treated as line wrapping; blank lines, numbered items ("1.", "2)"), bullets and section
    headers start a new sentence. A full stop after a known abbreviation ("vs.", "e.g.", "Dr.") or inside a number
    ("2.1 cm") does not end a sentence. Fragments without a letter (a lone "2.") are dropped.

    Args:
        text: the report text.

    Returns:
        The sentences in report order, whitespace-normalised, each keeping its final punctuation.

    Example::

        >>> split_sentences("FINDINGS: Heart size is normal. No effusion.\\n\\nIMPRESSION:\\n1. No acute process.")
        ['Heart size is normal.', 'No effusion.', 'No acute process.']
    """
    sentences: list[str] = []
    for paragraph in _PARAGRAPH.split(text):
        # numbered items and bullets on their own line start a new sentence even without a blank line
        for block in re.split(r"\n(?=\s*(?:\(?\d{1,2}[.)]|[-*\u2022])\s)", paragraph):
            flat = " ".join(block.split())
            pieces = _BOUNDARY.split(flat)
            merged: list[str] = []
            for piece in pieces:
                if merged and (_ABBREVIATION.search(merged[-1]) or not _WORD.search(merged[-1])):
                    merged[-1] = f"{merged[-1]} {piece}"
                else:
                    merged.append(piece)
            for sentence in merged:
                sentence = _strip_prefixes(sentence)
                if _WORD.search(sentence):
                    sentences.append(sentence)
    return sentences


def _strip_prefixes(sentence: str) -> str:
    """Remove leading section headers and list markers ("IMPRESSION: 1. ...")."""
    previous = None
    while previous != sentence:
        previous = sentence
        sentence = _ENUMERATION.sub("", _HEADER.sub("", sentence))
    return sentence.strip()
