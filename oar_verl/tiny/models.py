"""Small models and tokenizers built locally, with no model hub.

The demo, the tests and the CPU training runs use these: a byte-level BPE tokenizer
(256 byte symbols, optional merges, ChatML special tokens, so that `\\n` is one token and
no text is lost) and a Qwen2-architecture causal LM of a few layers built from a config.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from tokenizers.pre_tokenizers import ByteLevel
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from oar_verl.core.offsets import BYTE_OF_SYMBOL

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>")

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def byte_tokenizer(merges: Sequence[tuple[str, str]] = ()) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer: ids 0..255 are the 256 byte symbols, then one id per
    merge (in order), then the special tokens of `SPECIAL_TOKENS`.

    `merges` are pairs of byte-level symbols (GPT-2's byte-to-unicode alphabet; for ASCII
    letters, digits and punctuation that is the character itself, and a space is "Ġ"),
    e.g. `[("#", "#"), ("##", "##")]` makes "####" one token.
    """
    alphabet = ByteLevel.alphabet()
    byte_symbols = sorted(alphabet, key=BYTE_OF_SYMBOL.__getitem__)
    vocab = {symbol: index for index, symbol in enumerate(byte_symbols)}
    for left, right in merges:
        if left not in vocab or right not in vocab:
            raise ValueError(f"merges: ({left!r}, {right!r}) joins a symbol that is not in the vocabulary")
        vocab.setdefault(left + right, len(vocab))
    backend = Tokenizer(models.BPE(vocab=vocab, merges=list(merges)))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|endoftext|>",
        pad_token="<|pad|>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


def tiny_qwen2(
    vocab_size: int,
    *,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    max_positions: int = 512,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    tie_embeddings: bool = False,
) -> Qwen2ForCausalLM:
    """A randomly initialised Qwen2 causal LM of `num_layers` layers (sdpa attention); the
    output head shares the input embeddings' weight when `tie_embeddings`."""
    config = Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=max_positions,
        tie_word_embeddings=tie_embeddings,
        attn_implementation="sdpa",
    )
    torch.manual_seed(seed)
    return Qwen2ForCausalLM(config).to(dtype)
