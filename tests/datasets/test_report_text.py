"""Report text processing: sentence splitting, rule-based statuses, measured precision/recall, parser, LLM fallback."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from datasets.errors import InputError
from datasets.report_text import (
    RuleAligner,
    brgsa_sentences,
    carzero_sentences,
    get_lexicon,
    load_prompt_config,
    parse_output,
    report_statuses,
    sentence_statuses,
    split_sentences,
)
from datasets.report_text.evaluate import evaluate, read_labelled, to_markdown
from datasets.report_text.evaluate import main as evaluate_main

ROOT = Path(__file__).resolve().parents[2]
LABELS = ROOT / "tests" / "data" / "report_sentences"
DOC = ROOT / "docs" / "prompt_alignment.md"
CONFIGS = ROOT / "configs" / "prompts"
CXR = get_lexicon("chestxray14")
CT = get_lexicon("ct-rate")


def test_split_sentences_handles_headers_numbers_decimals_and_wrapping():
    text = (
        "FINDINGS: There is a 2.1 cm nodule,\natelectasis vs. pneumonia. No effusion.\n\n"
        "IMPRESSION:\n1. Nodule.\n2. No pneumothorax."
    )
    assert split_sentences(text) == [
        "There is a 2.1 cm nodule, atelectasis vs. pneumonia.", "No effusion.", "Nodule.", "No pneumothorax.",
    ]
    assert split_sentences("") == []


@pytest.mark.parametrize(
    ("sentence", "expected"),
    [
        ("No pleural effusion.", {"Effusion": "negative"}),
        ("Right chest tube in place without pneumothorax.", {"Pneumothorax": "negative"}),
        ("The lungs are free of consolidation.", {"Consolidation": "negative"}),
        ("Resolved left lower lobe pneumonia.", {"Pneumonia": "negative"}),
        ("Cannot exclude pneumonia.", {"Pneumonia": "uncertain"}),
        ("Possible small effusion.", {"Effusion": "uncertain"}),
        ("No change in the left effusion.", {"Effusion": "positive"}),
        ("No new consolidation.", {"Consolidation": "negative"}),
        ("Heart size is normal.", {"Cardiomegaly": "negative"}),
        ("The lungs are clear.", {"No Finding": "positive"}),
        ("Small amount of subcutaneous emphysema.", {}),
        ("No effusion, but there is mild atelectasis.", {"Effusion": "negative", "Atelectasis": "positive"}),
        ("Opacity, atelectasis versus pneumonia.", {"Atelectasis": "uncertain", "Pneumonia": "uncertain"}),
    ],
)
def test_sentence_statuses_hard_cases(sentence, expected):
    assert sentence_statuses(sentence, CXR) == expected


def test_report_statuses_take_the_strongest_and_set_no_finding():
    statuses = report_statuses("No pleural effusion. Small left pleural effusion is again seen.", CXR)
    assert statuses["Effusion"] == "positive" and statuses["No Finding"] == "absent"
    normal = report_statuses("No pneumothorax. No effusion.", CXR)
    assert normal["No Finding"] == "positive" and normal["Pneumothorax"] == "negative"
    assert set(normal) == set(CXR.classes)


def test_carzero_sentences_use_the_benchmark_prompt_names():
    report = "Moderate cardiomegaly. No change in the left effusion. Cannot exclude pneumonia. No pneumothorax."
    statuses = report_statuses(report, CXR)
    assert carzero_sentences(statuses, CXR) == ["There is Cardiomegaly", "There is Pleural Effusion"]
    assert carzero_sentences(statuses, CXR, uncertain="positive") == [
        "There is Cardiomegaly", "There is Pleural Effusion", "There is Pneumonia",
    ]
    assert RuleAligner(CXR, "carzero").sentences("The lungs are clear. No effusion.") == ["There is No Finding"]
    prompts = (CONFIGS / "chestxray14.txt").read_text().splitlines()
    assert "There is Pleural Effusion" in prompts  # the training form equals the zero-shot prompt


def test_brgsa_sentences_on_a_ct_rate_report():
    report = (
        "Heart size increased. No pleural or pericardial effusion was detected. A 6 mm nodule in the right upper lobe. "
        "Calcific atherosclerotic changes in the aorta and coronary arteries. Emphysema cannot be excluded."
    )
    statuses = report_statuses(report, CT)
    assert brgsa_sentences(statuses, CT) == [
        "There is Arterial wall calcification.", "There is Cardiomegaly.",
        "There is Coronary artery wall calcification.",
        "There is Lung nodule.", "No pericardial effusion.", "No pleural effusion.",
    ]
    hedged = brgsa_sentences(statuses, CT, uncertain="hedge", negatives=False)
    assert hedged[-1] == "Possible emphysema." and not any(s.startswith("No ") for s in hedged)


def test_ill_args():
    with pytest.raises(InputError, match="choose from"):
        get_lexicon("padchest")
    with pytest.raises(InputError, match="hedge"):
        RuleAligner(CXR, "carzero", uncertain="hedge")
    with pytest.raises(KeyError, match="there-is"):
        parse_output("There is X", "free-text")


def test_measured_precision_recall_is_the_documented_table():
    """The tables in docs/prompt_alignment.md are this function's output, byte for byte."""
    doc = DOC.read_text(encoding="utf-8")
    for name in ("hand_labelled.csv", "held_out.csv"):
        result = evaluate(read_labelled(LABELS / name, CXR), CXR)
        assert to_markdown(result) in doc
        assert len(result.findings) == 15  # the 14 ChestX-ray14 classes and No Finding are all covered
    held_out = evaluate(read_labelled(LABELS / "held_out.csv", CXR), CXR)
    assert held_out.macro_f1_findings > 0.8 and held_out.macro_f1_statuses > 0.8


def test_labelled_set_size_and_evaluate_cli(capsys):
    labelled = read_labelled(LABELS / "hand_labelled.csv", CXR)
    assert len(labelled.labels) >= 100
    assert evaluate_main([str(LABELS / "held_out.csv"), "--markdown"]) == 0
    assert "| **macro F1** |" in capsys.readouterr().out


def test_read_labelled_rejects_unknown_status(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("sentence,finding,status\nNo effusion.,Effusion,denied\n", encoding="utf-8")
    with pytest.raises(InputError, match="row 2, column 'status'"):
        read_labelled(bad, CXR)


def test_parse_output_on_well_formed_and_malformed_text():
    assert parse_output("There is Cardiomegaly\n- There is pleural effusion.\n\nI hope this helps", "there-is") == [
        "There is Cardiomegaly", "There is pleural effusion",
    ]
    assert parse_output('["There is a 6 mm nodule.", "No pleural effusion"]', "findings") == [
        "There is a 6 mm nodule.", "No pleural effusion.",
    ]
    for bad in ("", "   \n", "[]", "[1, 2]", "There is no effusion", "Sure! There is Cardiomegaly", "[unterminated"):
        assert parse_output(bad, "there-is") is None, bad
    assert parse_output("There is " + "very " * 30 + "large heart", "there-is") is None


def test_prompt_configs_load_and_hash(tmp_path):
    carzero = load_prompt_config(CONFIGS / "llm_align_carzero.yaml")
    brgsa = load_prompt_config(CONFIGS / "llm_summarize_brgsa.yaml")
    assert (carzero.style, carzero.output_format, brgsa.style, brgsa.output_format) == (
        "carzero", "there-is", "brgsa", "findings",
    )
    assert re.fullmatch(r"[0-9a-f]{64}", carzero.sha256) and carzero.sha256 != brgsa.sha256
    assert "No effusion." in carzero.prompt("No effusion.") and "{report}" not in carzero.prompt("x")
    broken = tmp_path / "broken.yaml"
    broken.write_text((CONFIGS / "llm_align_carzero.yaml").read_text().replace("{report}", "REPORT"))
    with pytest.raises(InputError, match="exactly once"):
        load_prompt_config(broken)


def _tiny_causal_lm(folder: Path, words: list[str]):
    """A randomly initialised 2-layer Llama with a word-level tokenizer, saved as a local model folder."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    vocab = {token: i for i, token in enumerate(specials + sorted(set(words)))}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
        intermediate_size=64, max_position_embeddings=512, pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_lm_dir(tmp_path_factory) -> Path:
    config = load_prompt_config(CONFIGS / "llm_align_carzero.yaml")
    words = (config.instruction + " There is Cardiomegaly no pleural effusion lungs are clear moderate").split()
    return _tiny_causal_lm(tmp_path_factory.mktemp("tiny_lm"), words)


def test_llm_with_a_random_model_falls_back_per_row(tiny_lm_dir):
    from datasets.report_text.llm import LLMAligner

    config = replace(load_prompt_config(CONFIGS / "llm_align_carzero.yaml"), max_new_tokens=12)
    rules = RuleAligner(CXR, "carzero")
    aligner = LLMAligner.from_pretrained(str(tiny_lm_dir), config, rules, batch_size=2)
    reports = ["moderate Cardiomegaly", "no pleural effusion lungs are clear", "There is Cardiomegaly"]
    results = aligner.align(reports)
    assert len(results) == 3
    for report, result in zip(reports, results):
        assert result.raw is not None and parse_output(result.raw, "there-is") is None  # garbage, row by row
        assert (result.source, result.fallback) == ("rules", True)
        assert result.sentences == rules.sentences(report)
    assert results[0].sentences == ["There is Cardiomegaly"] and results[1].sentences == ["There is No Finding"]
    # batching does not change greedy outputs of a row (left padding)
    assert aligner.generate(reports[:1]) == aligner.generate(reports[:2])[:1]


def test_llm_output_that_parses_is_used_as_is(fixed_answer_lm):
    """A model whose greedy answer is a valid "There is <finding>" line: every row is the LLM's, none falls back."""
    from datasets.report_text.llm import LLMAligner

    config = replace(load_prompt_config(CONFIGS / "llm_align_carzero.yaml"), max_new_tokens=12)
    trigger = config.prompt("any report").split()[-1]  # the instruction's last word ("Findings:")
    folder = fixed_answer_lm(config.instruction.split(), trigger, "There is Pneumothorax")
    rules = RuleAligner(CXR, "carzero")
    aligner = LLMAligner.from_pretrained(str(folder), config, rules, batch_size=2)
    reports = ["moderate Cardiomegaly", "no pleural effusion lungs are clear", "There is Cardiomegaly"]
    results = aligner.align(reports)
    assert [(result.source, result.fallback) for result in results] == [("llm", False)] * 3
    assert [result.raw for result in results] == ["There is Pneumothorax"] * 3
    assert [result.sentences for result in results] == [["There is Pneumothorax"]] * 3
    assert all(rules.sentences(report) != ["There is Pneumothorax"] for report in reports)  # not the rules' rows


def test_llm_load_errors_are_input_errors(tmp_path):
    from datasets.report_text.llm import LLMAligner

    config = load_prompt_config(CONFIGS / "llm_align_carzero.yaml")
    with pytest.raises(FileNotFoundError, match="no model folder"):  # named before the hub client sees it
        LLMAligner.from_pretrained(str(tmp_path / "missing"), config, RuleAligner(CXR, "carzero"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="cannot load a causal language model"):
        LLMAligner.from_pretrained(str(tmp_path / "empty"), config, RuleAligner(CXR, "carzero"))
