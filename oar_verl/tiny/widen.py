"""A Qwen2 model widened to a larger attention head size without changing what it computes.

vLLM's CPU attention takes head sizes 32 and up; the study's warm start (hidden size 64,
4 heads of 16) is served by the project's hf rollout only. `widened(model, factor)` builds
the same function with hidden size and head size `factor` times larger and the same heads:

- every new dimension is zero where the original has none to give it: the residual stream's
  extra dimensions (embeddings, attention output and MLP output write zeros there, the
  head reads none of them), and in each head the extra query/key/value dimensions;
- each original head dimension goes where rotary embedding turns it by the same angle:
  dimension `i` of the first half (frequency index `i`) to `factor * i`, dimension
  `d/2 + i` to `D/2 + factor * i` (head size `d` -> `D = factor * d`: frequency
  `theta^(-2i/d)` is index `factor * i` of `D`);
- queries are scaled by `sqrt(factor)` (attention divides by `sqrt(D)` instead of
  `sqrt(d)`); the RMS norms' weights by `1 / sqrt(factor)` and their epsilon by
  `1 / factor` (the mean square runs over `factor` times more dimensions, the extra ones
  zero: `sqrt(ms / factor + eps / factor) = sqrt(ms + eps) / sqrt(factor)`).

Logits agree with the original's up to float rounding (tested against the original).
Training leaves the extra dimensions at zero (their weights and their gradients are both
zero), so a widened model trains as the original would, in a shape vLLM's CPU build serves.

    python -m oar_verl.tiny.widen SOURCE_DIR OUTPUT_DIR [--factor 2]
"""

from __future__ import annotations

import argparse
import math
import shutil
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, Qwen2Config, Qwen2ForCausalLM

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json")


def head_positions(head_size: int, factor: int) -> torch.Tensor:
    """(head_size,) index in the widened head of each original head dimension (rotary
    embedding's rotate-half layout: the two halves pair up)."""
    half = head_size // 2
    first = torch.arange(half) * factor
    return torch.cat([first, first + half * factor])


def widened_config(config: Qwen2Config, factor: int) -> Qwen2Config:
    """`config` with hidden size and head size `factor` times larger (same heads)."""
    rope = getattr(config, "rope_parameters", None) or {}
    if rope.get("rope_type", "default") != "default":
        raise ValueError(f"widening keeps rotary angles for rope_type 'default' only; this model's is {rope.get('rope_type')!r}")
    if getattr(config, "head_dim", None) not in (None, config.hidden_size // config.num_attention_heads):
        raise ValueError(f"widening needs head_dim = hidden_size / num_attention_heads; this model's head_dim is {config.head_dim}")
    if config.tie_word_embeddings:
        raise ValueError("widening keeps untied embeddings only (tie_word_embeddings=false)")
    values = config.to_dict()
    values.update(hidden_size=config.hidden_size * factor, rms_norm_eps=config.rms_norm_eps / factor)
    values.pop("head_dim", None)
    return Qwen2Config(**values)


def widened(model: Qwen2ForCausalLM, factor: int = 2) -> Qwen2ForCausalLM:
    """A new model computing `model`'s function with hidden size and head size x `factor`."""
    if factor < 1:
        raise ValueError(f"factor must be >= 1, got {factor}")
    config = model.config
    hidden, heads, kv_heads = config.hidden_size, config.num_attention_heads, config.num_key_value_heads
    head_size = hidden // heads
    if head_size % 2:
        raise ValueError(f"head size {head_size} is odd: rotary embedding pairs dimensions")
    wide = Qwen2ForCausalLM(widened_config(config, factor)).to(model.dtype)
    positions = head_positions(head_size, factor)
    query_scale, norm_scale = math.sqrt(factor), 1 / math.sqrt(factor)
    source = model.state_dict()
    target = {name: torch.zeros_like(tensor) for name, tensor in wide.state_dict().items()}

    def head_rows(n_heads: int) -> torch.Tensor:
        """(n_heads * head_size,) widened row of each original projection row."""
        return torch.cat([h * head_size * factor + positions for h in range(n_heads)])

    for name, tensor in source.items():
        out = target[name]
        if name.endswith(("q_proj.weight", "k_proj.weight", "v_proj.weight")):
            rows = head_rows(heads if "q_proj" in name else kv_heads)
            out[rows, :hidden] = tensor * (query_scale if "q_proj" in name else 1.0)
        elif name.endswith(("q_proj.bias", "k_proj.bias", "v_proj.bias")):
            rows = head_rows(heads if "q_proj" in name else kv_heads)
            out[rows] = tensor * (query_scale if "q_proj" in name else 1.0)
        elif name.endswith("o_proj.weight"):
            out[:hidden, head_rows(heads)] = tensor
        elif name.endswith("norm.weight"):
            out.fill_(1.0)
            out[:hidden] = tensor * norm_scale
        elif name.endswith(("gate_proj.weight", "up_proj.weight", "embed_tokens.weight", "lm_head.weight")):
            out[:, :hidden] = tensor
        elif name.endswith("down_proj.weight"):
            out[:hidden] = tensor
        else:
            raise ValueError(f"widening does not know the parameter {name!r} (Qwen2 layers only)")
    wide.load_state_dict(target)
    wide.generation_config = model.generation_config
    return wide.eval()


def widen_saved(source: Path, output: Path, factor: int = 2) -> Path:
    """The model saved in `source` widened (`widened`) and saved in `output` with its tokenizer."""
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    output.mkdir(parents=True, exist_ok=True)
    widened(model, factor).save_pretrained(output)
    for name in TOKENIZER_FILES:
        if (source / name).exists():
            shutil.copy(source / name, output / name)
    return output


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m oar_verl.tiny.widen", description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="a saved Qwen2 model directory (required)")
    parser.add_argument("output", type=Path, help="where the widened model and the tokenizer are saved (required)")
    parser.add_argument("--factor", type=int, default=2, help="hidden size and head size multiplier (default: %(default)s)")
    args = parser.parse_args(argv)
    print(widen_saved(args.source, args.output, args.factor))


if __name__ == "__main__":
    main()
