"""Parse an LLM's output into sentences, or reject it.

Two output forms are accepted, both defined by the instruction prompts in ``configs/prompts/llm_*.yaml``:

* **lines**: one sentence per line; list markers ("-", "*", "1.") are removed; parsing stops at the first blank
  line after some content (models often continue with chatter after the list);
* **a JSON list of strings**, when the output starts with ``[``.

Every sentence must match the output format (:data:`OUTPUT_FORMATS`), else the whole output is rejected:

* ``there-is`` (CARZero): "There is <finding>" / "There are <findings>", not "There is no ...", at most
  :data:`MAX_WORDS` words; written back as "There is <finding>" without a final full stop, like CARZero's prompts.
* ``findings`` (BrgSA): "There is/are <finding>." or "No <finding>." (or "Possible <finding>."), at most
  :data:`MAX_WORDS` words; written back with a final full stop.

Rejected or empty output returns None; the caller then falls back to the rule-based aligner for that row.
"""

from __future__ import annotations

import json
import re

__all__ = ["OUTPUT_FORMATS", "MAX_WORDS", "parse_output"]

MAX_WORDS = 20
OUTPUT_FORMATS: dict[str, re.Pattern[str]] = {
    "there-is": re.compile(r"^there (?:is|are) (?!no\b|not\b)(?P<finding>[a-z0-9(].*?)\.?$", re.IGNORECASE),
    "findings": re.compile(
        r"^(?:there (?:is|are) (?!no\b|not\b)|no |possible )(?P<finding>[a-z0-9(].*?)\.?$", re.IGNORECASE
    ),
}
_MARKER = re.compile(r"^\s*(?:[-*\u2022]|\d{1,2}[.)])\s*")


def _candidates(text: str) -> list[str] | None:
    stripped = text.strip()
    if stripped.startswith("["):
        end = stripped.find("]")
        try:
            items = json.loads(stripped[: end + 1]) if end >= 0 else None
        except json.JSONDecodeError:
            return None
        if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
            return None
        return [" ".join(item.split()) for item in items]
    lines: list[str] = []
    for line in text.splitlines():
        line = " ".join(_MARKER.sub("", line).split())
        if not line:
            if lines:
                break
            continue
        lines.append(line)
    return lines


def parse_output(text: str, output_format: str) -> list[str] | None:
    """Sentences of an LLM output, or None when the output is empty or malformed.

    Args:
        text: the generated text (the prompt excluded).
        output_format: a key of :data:`OUTPUT_FORMATS`.

    Raises:
        KeyError: an unknown ``output_format`` (the message lists the formats).

    Example::

        >>> parse_output("There is Pleural Effusion\\nThere is atelectasis.\\n\\nNote: ...", "there-is")
        ['There is Pleural Effusion', 'There is atelectasis']
        >>> parse_output('["No pleural effusion.", "There is a 5 mm nodule"]', "findings")
        ['No pleural effusion.', 'There is a 5 mm nodule.']
        >>> parse_output("The report says", "there-is") is None
        True
    """
    if output_format not in OUTPUT_FORMATS:
        raise KeyError(f"unknown output format {output_format!r}; choose from: {', '.join(OUTPUT_FORMATS)}")
    pattern = OUTPUT_FORMATS[output_format]
    candidates = _candidates(text)
    if not candidates:
        return None
    sentences = []
    for candidate in candidates:
        match = pattern.match(candidate)
        if match is None or not candidate or len(candidate.split()) > MAX_WORDS:
            return None
        body = candidate[: match.end("finding")]
        if output_format == "there-is":
            sentences.append("There " + body.split(" ", 1)[1])
        else:
            sentences.append(body[:1].upper() + body[1:] + ".")
    return sentences
