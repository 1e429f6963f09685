"""Tiny, randomly initialised causal LMs with a 7-token vocabulary, built from a config (no hub)."""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

VOCAB = ["<pad>", "<eos>", "<unk>", "a", "b"]
ANSWER_VOCAB = [*VOCAB, "Agree", "Disagree"]  # the lm-eval tests: two-option answers as single tokens
EOS = 1


def tiny_tokenizer(vocab=VOCAB) -> PreTrainedTokenizerFast:
    tk = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab)}, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=tk, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>"
    )


def tiny_model(
    seed: int = 0, vocab_size: int = len(VOCAB), sharpness: float = 1.0, max_positions: int = 128
) -> LlamaForCausalLM:
    """Random 2-layer Llama whose next-token distributions are far from uniform (sharpness scales the head)."""
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_positions,
        initializer_range=0.2,
        pad_token_id=0,
        eos_token_id=EOS,
        bos_token_id=None,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():
        model.lm_head.weight.mul_(sharpness)
    return model.eval()


def add_lora(model, names, seed: int = 0, r: int = 4, alpha: float = 32.0):
    """Wrap `model` in PEFT with randomly initialised (non-identity) LoRA adapters `names`."""
    from peft import LoraConfig, PeftModel, get_peft_model

    torch.manual_seed(seed)
    cfg = LoraConfig(
        r=r,
        lora_alpha=alpha,
        target_modules=["q_proj", "v_proj", "o_proj", "down_proj"],
        init_lora_weights=False,
    )
    peft = get_peft_model(model, cfg, adapter_name=names[0])
    for n in names[1:]:
        peft.add_adapter(n, cfg)
    assert isinstance(peft, PeftModel)
    return peft.eval()
