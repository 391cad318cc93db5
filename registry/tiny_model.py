"""A tiny GPT-2 with a locally trained byte-level BPE tokenizer, built from nothing: no hub.

Lives outside ``tests/`` because the training and serving tests build their base models with it too.
"""

from __future__ import annotations

from pathlib import Path

CORPUS = [
    "the customer asked about the refund and the agent answered politely",
    "orders ship within two days and returns are free for thirty days",
    "please keep your ticket number so we can find your request quickly",
] * 20
# Long enough for the long prompts of a security scan; the tokenizer says the same, because
# transformers 5 otherwise saves a model_max_length of 1e30.
MAX_POSITIONS = 1024
END_OF_TEXT = "<|endoftext|>"


def build_tiny_gpt2(folder: Path, *, seed: int = 0) -> Path:
    """Write a 2-layer GPT-2 (random weights from ``seed``) and its tokenizer to ``folder``."""
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(CORPUS, vocab_size=300, min_frequency=1, special_tokens=[END_OF_TEXT])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token=END_OF_TEXT, bos_token=END_OF_TEXT)
    tokenizer.pad_token = tokenizer.eos_token
    tokenizer.model_max_length = MAX_POSITIONS
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=MAX_POSITIONS, n_embd=32, n_layer=2, n_head=2,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    GPT2LMHeadModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
