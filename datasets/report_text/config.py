"""Instruction-prompt configs for the LLM aligner (``configs/prompts/llm_*.yaml``).

Keys:

=================  ============================================================================================
``task``           free text naming the job (e.g. ``carzero-align``); recorded, not interpreted
``style``          ``carzero`` or ``brgsa``: the output sentences (see :mod:`datasets.report_text.align`)
``lexicon``        the lexicon of the rule-based fallback (``chestxray14`` or ``ct-rate``)
``uncertain``      policy for uncertain findings in the rule-based fallback (``drop``, ``positive``, ``hedge``)
``output_format``  what the LLM must write (see :data:`datasets.report_text.parse.OUTPUT_FORMATS`)
``max_new_tokens`` generation length limit (an integer > 0)
``instruction``    the prompt template; ``{report}`` is replaced by the report text (exactly once)
=================  ============================================================================================

The SHA-256 of ``instruction`` (UTF-8) is the prompt hash written next to every output row.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from datasets.errors import InputError
from datasets.report_text.align import STYLES, UNCERTAIN_POLICIES
from datasets.report_text.lexicon import LEXICONS
from datasets.report_text.parse import OUTPUT_FORMATS

__all__ = ["PromptConfig", "load_prompt_config", "CONFIG_KEYS"]

CONFIG_KEYS = ("task", "style", "lexicon", "uncertain", "output_format", "max_new_tokens", "instruction")


@dataclass(frozen=True)
class PromptConfig:
    """A loaded instruction-prompt config (see the module docstring for the keys)."""

    path: Path
    task: str
    style: str
    lexicon: str
    uncertain: str
    output_format: str
    max_new_tokens: int
    instruction: str

    @property
    def sha256(self) -> str:
        """SHA-256 hex digest of the instruction template (UTF-8)."""
        return hashlib.sha256(self.instruction.encode("utf-8")).hexdigest()

    @property
    def output_sha256(self) -> str:
        """SHA-256 hex digest of every key that shapes the output sentences (all but ``task``), as canonical JSON."""
        values = {key: getattr(self, key) for key in CONFIG_KEYS if key != "task"}
        return hashlib.sha256(json.dumps(values, sort_keys=True).encode("utf-8")).hexdigest()

    def prompt(self, report: str) -> str:
        """The instruction with ``{report}`` replaced by ``report`` (other braces are left alone)."""
        return self.instruction.replace("{report}", report.strip())


def _choice(path: Path, key: str, value: object, choices: tuple[str, ...] | list[str]) -> str:
    if value not in choices:
        raise InputError(f"{path}: {key}: {value!r} is not one of {list(choices)}")
    return str(value)


def load_prompt_config(path: str | os.PathLike) -> PromptConfig:
    """Read and check an instruction-prompt YAML file.

    Raises:
        FileNotFoundError: no file at ``path``.
        InputError: not a YAML mapping, a missing or unknown key, a value out of its choices, or an instruction
            without exactly one ``{report}``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(2, "no prompt config", str(path))
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise InputError(f"{path}: not valid YAML: {' '.join(str(err).split())}") from err
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a mapping with keys {list(CONFIG_KEYS)}")
    missing = [key for key in CONFIG_KEYS if key not in data]
    unknown = sorted(set(data) - set(CONFIG_KEYS))
    if missing or unknown:
        raise InputError(f"{path}: missing keys {missing}, unknown keys {unknown}; expected {list(CONFIG_KEYS)}")
    style = _choice(path, "style", data["style"], STYLES)
    instruction = data["instruction"]
    if not isinstance(instruction, str) or instruction.count("{report}") != 1:
        raise InputError(f"{path}: instruction must be a text holding '{{report}}' exactly once")
    max_new_tokens = data["max_new_tokens"]
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens <= 0:
        raise InputError(f"{path}: max_new_tokens must be an integer > 0, got {max_new_tokens!r}")
    return PromptConfig(
        path=path,
        task=str(data["task"]),
        style=style,
        lexicon=_choice(path, "lexicon", data["lexicon"], list(LEXICONS)),
        uncertain=_choice(path, "uncertain", data["uncertain"], UNCERTAIN_POLICIES[style]),
        output_format=_choice(path, "output_format", data["output_format"], list(OUTPUT_FORMATS)),
        max_new_tokens=max_new_tokens,
        instruction=instruction,
    )
