"""Report text processing: sentence splitting, rule-based finding extraction, and LLM prompt alignment.

* :mod:`~datasets.report_text.sentences`: :func:`split_sentences`.
* :mod:`~datasets.report_text.lexicon`: per-class term patterns (``chestxray14``, ``ct-rate``).
* :mod:`~datasets.report_text.rules`: negation, uncertainty and pseudo-negation; per-sentence and per-report statuses.
* :mod:`~datasets.report_text.align`: statuses to CARZero "There is <finding>" or BrgSA short sentences.
* :mod:`~datasets.report_text.llm`: the same with a local causal LM, falling back to the rules per row.
* :mod:`~datasets.report_text.batch`: the report-table batch job behind ``carzero align-prompts`` and
  ``brgsa summarize``.
* :mod:`~datasets.report_text.evaluate`: precision and recall on hand-labelled sentences.

``llm`` imports ``transformers`` and is not imported here.
"""

from datasets.report_text.align import Alignment, RuleAligner, brgsa_sentences, carzero_sentences
from datasets.report_text.config import PromptConfig, load_prompt_config
from datasets.report_text.lexicon import LEXICONS, Lexicon, get_lexicon
from datasets.report_text.parse import OUTPUT_FORMATS, parse_output
from datasets.report_text.rules import RULES_VERSION, Mention, find_mentions, report_statuses, sentence_statuses
from datasets.report_text.sentences import split_sentences

__all__ = [
    "Alignment", "RuleAligner", "brgsa_sentences", "carzero_sentences", "PromptConfig", "load_prompt_config",
    "LEXICONS", "Lexicon", "get_lexicon", "OUTPUT_FORMATS", "parse_output", "RULES_VERSION", "Mention",
    "find_mentions", "report_statuses", "sentence_statuses", "split_sentences",
]
