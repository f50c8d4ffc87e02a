"""``carzero align-prompts`` on a pairs-1 manifest: rules output, resume, provenance, LLM fallback, errors."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import pytest

from carzero.prompts import main
from datasets.errors import InputError
from datasets.report_text.rules import RULES_VERSION

HEADER = "format_version,image,findings,impression,view,split,subject_id,study_id\n"
STUDY_1 = "Moderate cardiomegaly. No change in the left effusion.,No pneumothorax."


def _manifest(path: Path) -> Path:
    path.write_text(
        HEADER
        + f"pairs-1,files/p1/s1/a.jpg,{STUDY_1},PA,train,1,1\n"
        + f"pairs-1,files/p1/s1/b.jpg,{STUDY_1},LATERAL,train,1,1\n"
        + "pairs-1,files/p2/s2/c.jpg,,The lungs are clear. No acute cardiopulmonary process.,PA,test,2,2\n",
        encoding="utf-8",
    )
    return path


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_rules_alignment_resumes_and_records_provenance(tmp_path, capsys):
    reports, out = _manifest(tmp_path / "pairs.csv"), tmp_path / "aligned.csv"
    assert main([str(reports), "--out", str(out)]) == 0
    rows = _rows(out)
    assert [row["image"] for row in rows] == ["files/p1/s1/a.jpg", "files/p1/s1/b.jpg", "files/p2/s2/c.jpg"]
    assert json.loads(rows[0]["sentences"]) == ["There is Cardiomegaly", "There is Pleural Effusion"]
    assert json.loads(rows[2]["sentences"]) == ["There is No Finding"]
    assert {(r["source"], r["fallback"], r["aligner"], r["model"], r["prompt_sha256"], r["rules_version"])
            for r in rows} == {("rules", "false", "rules", "", "", RULES_VERSION)}
    assert main([str(reports), "--out", str(out)]) == 0  # a rerun skips what is there
    assert "3 already there" in capsys.readouterr().out and len(_rows(out)) == 3


def test_a_rerun_refuses_rows_made_from_another_report_text_or_config(tmp_path):
    reports, out = _manifest(tmp_path / "pairs.csv"), tmp_path / "aligned.csv"
    assert main([str(reports), "--out", str(out)]) == 0
    before = out.read_bytes()
    edited = tmp_path / "edited.csv"
    edited.write_text(reports.read_text(encoding="utf-8").replace("No pneumothorax.", "Small pneumothorax."),
                      encoding="utf-8")
    with pytest.raises(InputError, match=r"aligned\.csv row 2 \(image 'files/p1/s1/a.jpg'\).*report_sha256"):
        main([str(edited), "--out", str(out)])
    config = tmp_path / "positive.yaml"
    default = Path(__file__).parents[2] / "configs" / "prompts" / "llm_align_carzero.yaml"
    config.write_text(default.read_text(encoding="utf-8").replace("uncertain: drop", "uncertain: positive"),
                      encoding="utf-8")
    with pytest.raises(InputError, match=r"row 2 .*config_sha256"):
        main([str(reports), "--out", str(out), "--config", str(config)])
    assert out.read_bytes() == before  # nothing appended by the refused runs


def test_bad_arguments_are_input_errors(tmp_path):
    reports = _manifest(tmp_path / "pairs.csv")
    with pytest.raises(InputError, match="needs --model"):
        main([str(reports), "--out", str(tmp_path / "o.csv"), "--aligner", "llm"])
    with pytest.raises(InputError, match="only used with --aligner llm"):
        main([str(reports), "--out", str(tmp_path / "o.csv"), "--model", "x"])
    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n", encoding="utf-8")
    with pytest.raises(InputError, match="neither a pairs-1 manifest"):
        main([str(other), "--out", str(tmp_path / "o.csv")])


@pytest.fixture(scope="module")
def tiny_lm_dir(tmp_path_factory) -> Path:
    """A randomly initialised 2-layer Llama with a word-level tokenizer, saved as a local model folder."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("tiny_lm")
    words = sorted(set("You are a radiologist There is No Finding Report Findings cardiomegaly effusion".split()))
    vocab = {token: i for i, token in enumerate(["<pad>", "<s>", "</s>", "<unk>", *words])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    ).save_pretrained(folder)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
        intermediate_size=64, max_position_embeddings=512, pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def test_llm_aligner_end_to_end_falls_back_per_row(tmp_path, tiny_lm_dir):
    reports, out = _manifest(tmp_path / "pairs.csv"), tmp_path / "aligned.csv"
    config = tmp_path / "config.yaml"
    default = Path(__file__).resolve().parents[2] / "configs" / "prompts" / "llm_align_carzero.yaml"
    config.write_text(default.read_text().replace("max_new_tokens: 96", "max_new_tokens: 8"), encoding="utf-8")
    assert main([str(reports), "--out", str(out), "--aligner", "llm", "--model", str(tiny_lm_dir),
                 "--config", str(config), "--batch-size", "2"]) == 0
    rows = _rows(out)
    assert len(rows) == 3
    for row in rows:  # the random model writes garbage: every row is the rules' output, flagged
        assert (row["source"], row["fallback"], row["aligner"], row["model"]) == ("rules", "true", "llm",
                                                                                   str(tiny_lm_dir))
        assert len(row["prompt_sha256"]) == 64
    assert json.loads(rows[2]["sentences"]) == ["There is No Finding"]


def test_llm_aligner_end_to_end_writes_the_model_sentences_with_their_provenance(tmp_path, fixed_answer_lm):
    """A model whose greedy answer parses: every row is the LLM's, not flagged, with the model and hashes pinned."""
    from datasets.report_text.config import load_prompt_config

    reports, out = _manifest(tmp_path / "pairs.csv"), tmp_path / "aligned.csv"
    config_path = tmp_path / "config.yaml"
    default = Path(__file__).resolve().parents[2] / "configs" / "prompts" / "llm_align_carzero.yaml"
    config_path.write_text(default.read_text().replace("max_new_tokens: 96", "max_new_tokens: 8"), encoding="utf-8")
    config = load_prompt_config(config_path)
    trigger = config.prompt("any report").split()[-1]  # the instruction's last word ("Findings:")
    model = fixed_answer_lm(config.instruction.split(), trigger, "There is Pneumothorax")
    assert main([str(reports), "--out", str(out), "--aligner", "llm", "--model", str(model),
                 "--config", str(config_path), "--batch-size", "2"]) == 0
    rows = _rows(out)
    assert [row["image"] for row in rows] == ["files/p1/s1/a.jpg", "files/p1/s1/b.jpg", "files/p2/s2/c.jpg"]
    for row in rows:  # the rules would write Cardiomegaly/Pleural Effusion and No Finding: these are the model's
        assert json.loads(row["sentences"]) == ["There is Pneumothorax"]
        assert (row["source"], row["fallback"], row["aligner"], row["model"]) == ("llm", "false", "llm", str(model))
        assert (row["prompt_sha256"], row["config_sha256"], row["rules_version"]) == (
            hashlib.sha256(config.instruction.encode("utf-8")).hexdigest(), config.output_sha256, RULES_VERSION)
    impression = "The lungs are clear. No acute cardiopulmonary process."
    assert rows[2]["report_sha256"] == hashlib.sha256(impression.encode("utf-8")).hexdigest()
    assert rows[0]["report_sha256"] == rows[1]["report_sha256"] != rows[2]["report_sha256"]  # one study, two views


def test_llm_aligner_refuses_an_encoder_and_says_when_no_folder_is_there(tmp_path, tiny_bert_dir):
    """A BERT folder loaded as a causal LM only ever fell back to the rules, with exit 0."""
    reports, out = _manifest(tmp_path / "pairs.csv"), tmp_path / "aligned.csv"
    with pytest.raises(InputError, match=r"is a BertModel \(architectures in its config.json\), not a causal"):
        main([str(reports), "--out", str(out), "--aligner", "llm", "--model", str(tiny_bert_dir)])
    with pytest.raises(InputError, match=r"'nodir' \(no local folder, so a Hugging Face hub id\)"):
        main([str(reports), "--out", str(out), "--aligner", "llm", "--model", "nodir"])
    assert not out.exists()
