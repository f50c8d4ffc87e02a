"""LLM prompt alignment with a local causal language model, falling back to the rules row by row.

Any causal LM that ``transformers`` can load (``AutoModelForCausalLM`` + ``AutoTokenizer``) from a local folder or an
already-cached hub id works: reports are turned into prompts with the config's instruction template, generated
greedily in batches (left padding), parsed (:func:`~datasets.report_text.parse.parse_output`), and any row whose
output is empty or malformed is made by the rule-based aligner instead, flagged ``fallback=True``.

Reports must stay on the machine: MIMIC-CXR's data-use agreement forbids sending them to external services, so there
is deliberately no API client here. ``trust_remote_code`` runs code shipped with a model folder and is off unless
asked for.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from datasets.errors import InputError
from datasets.report_text.align import Alignment, RuleAligner
from datasets.report_text.config import PromptConfig
from datasets.report_text.parse import parse_output
from datasets.text_models import check_local_model_path

__all__ = ["LLMAligner"]

logger = logging.getLogger(__name__)


_GENERATIVE_SUFFIXES = ("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")


def _check_generative(config: object, model_id: str) -> None:
    """Refuse a model whose ``config.json`` names only non-generative architectures (e.g. a BERT encoder)."""
    architectures = getattr(config, "architectures", None) or []
    if architectures and not any(name.endswith(_GENERATIVE_SUFFIXES) for name in architectures):
        raise InputError(
            f"{model_id!r} is a {', '.join(architectures)} (architectures in its config.json), not a causal language "
            "model; --aligner llm needs a generative model (a *ForCausalLM, e.g. a Llama, Qwen or Mistral folder)"
        )


class LLMAligner:
    """Turn reports into sentences with a local causal LM; unusable outputs fall back to the rules per row.

    Args:
        model: a causal LM (``generate`` capable), in eval mode.
        tokenizer: its tokenizer.
        config: the instruction prompt and output format.
        fallback: the rule-based aligner used for rows whose output is unusable.
        model_id: the folder or hub id, recorded as provenance.
        batch_size: reports per ``generate`` call. Defaults to 8.
        chat_template: wrap each prompt in the tokenizer's chat template as a user turn; None uses it when the
            tokenizer has one. Defaults to None.

    Raises:
        InputError: ``batch_size`` < 1, or a tokenizer with neither a pad nor an end-of-sequence token.

    Example::

        aligner = LLMAligner.from_pretrained("/models/Qwen2.5-7B-Instruct", config, RuleAligner(lexicon, "carzero"))
        rows = aligner.align(["No pleural effusion. Moderate cardiomegaly."])
        rows[0].sentences, rows[0].source  # (['There is Cardiomegaly'], 'llm')
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        config: PromptConfig,
        fallback: RuleAligner,
        model_id: str,
        batch_size: int = 8,
        chat_template: bool | None = None,
    ) -> None:
        if batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size}")
        if tokenizer.pad_token_id is None:
            if tokenizer.eos_token is None:
                raise InputError(f"the tokenizer of {model_id} has no pad and no end-of-sequence token")
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "left"  # decoder-only: prompts must end where generation starts
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.config = config
        self.fallback = fallback
        self.model_id = model_id
        self.batch_size = batch_size
        self.chat_template = bool(getattr(tokenizer, "chat_template", None)) if chat_template is None else chat_template

    @classmethod
    def from_pretrained(
        cls,
        model_id: str,
        config: PromptConfig,
        fallback: RuleAligner,
        batch_size: int = 8,
        trust_remote_code: bool = False,
        device: str = "cpu",
        dtype: str | None = None,
    ) -> LLMAligner:
        """Load a causal LM and its tokenizer from a local folder or a cached hub id.

        Args:
            model_id: folder or hub id.
            config: the instruction prompt and output format.
            fallback: the rule-based aligner for unusable outputs.
            batch_size: reports per ``generate`` call. Defaults to 8.
            trust_remote_code: allow code shipped with the model to run. Defaults to False.
            device: torch device. Defaults to "cpu".
            dtype: torch dtype name (``"bfloat16"``, ``"float16"``, ``"float32"``); None keeps the checkpoint's.
                Defaults to None.

        Raises:
            InputError: the model or tokenizer cannot be loaded, or an unknown ``dtype``.
        """
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        torch_dtype = "auto"
        if dtype is not None:
            if dtype not in ("bfloat16", "float16", "float32"):
                raise InputError(f"dtype must be bfloat16, float16 or float32, got {dtype!r}")
            torch_dtype = getattr(torch, dtype)
        check_local_model_path(model_id)
        is_folder = Path(model_id).expanduser().is_dir()
        where = "a local folder" if is_folder else "no local folder, so a Hugging Face hub id"
        try:
            _check_generative(AutoConfig.from_pretrained(model_id, trust_remote_code=trust_remote_code), model_id)
            tokenizer = AutoTokenizer.from_pretrained(model_id, trust_remote_code=trust_remote_code)
            model = AutoModelForCausalLM.from_pretrained(
                model_id, trust_remote_code=trust_remote_code, dtype=torch_dtype
            )
        except InputError:
            raise
        except (OSError, ValueError) as err:
            raise InputError(
                f"cannot load a causal language model from {model_id!r} ({where}): {' '.join(str(err).split())[:300]}"
            ) from err
        return cls(model.to(device), tokenizer, config, fallback, model_id, batch_size)

    def build_prompt(self, report: str) -> str:
        """The text given to the model for one report."""
        prompt = self.config.prompt(report)
        if self.chat_template:
            return self.tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
            )
        return prompt

    @torch.inference_mode()
    def generate(self, reports: list[str]) -> list[str]:
        """Greedy generations (the prompt excluded) for a batch of reports."""
        prompts = [self.build_prompt(report) for report in reports]
        inputs = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=not self.chat_template)
        inputs = {key: value.to(self.model.device) for key, value in inputs.items()}
        output_ids = self.model.generate(
            **inputs, do_sample=False, max_new_tokens=self.config.max_new_tokens,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        new_tokens = output_ids[:, inputs["input_ids"].shape[1]:]  # (B, <= max_new_tokens)
        return self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)

    def align(self, reports: list[str]) -> list[Alignment]:
        """One :class:`Alignment` per report: the LLM's sentences, or the rules' with ``fallback=True``."""
        results = []
        for first in range(0, len(reports), self.batch_size):
            batch = reports[first:first + self.batch_size]
            for report, raw in zip(batch, self.generate(batch)):
                sentences = parse_output(raw, self.config.output_format)
                if sentences is None:
                    logger.debug("unusable LLM output %r; using the rules", raw[:200])
                    results.append(Alignment(self.fallback.sentences(report), "rules", True, raw))
                else:
                    results.append(Alignment(sentences, "llm", False, raw))
        return results
