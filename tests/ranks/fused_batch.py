"""The batch and model both fused-numerics rank scripts use (built on import: the process group, a tiny
model saved by rank 0, a mixed-length batch and its segments)."""

import os

import torch
import torch.distributed as dist

from oar_verl.core import ResponseBatch, Segments
from oar_verl.tiny.models import byte_tokenizer, tiny_qwen2

dist.init_process_group("gloo")
path = os.path.join(os.environ["OK_DIR"], "model")
tokenizer = byte_tokenizer()
if dist.get_rank() == 0:
    tiny_qwen2(len(tokenizer), hidden_size=64, seed=3).save_pretrained(path)
    tokenizer.save_pretrained(path)
dist.barrier()
generator = torch.Generator().manual_seed(0)
lengths = [(5, 30), (9, 12), (3, 25), (7, 18), (4, 30), (6, 9)]  # (prompt, response)
batch = ResponseBatch.from_token_lists(
    [torch.randint(0, 250, (p,), generator=generator).tolist() for p, _ in lengths],
    [torch.randint(0, 250, (r,), generator=generator).tolist() for _, r in lengths],
    pad_token_id=tokenizer.pad_token_id,
)
B, P, R, mask = len(lengths), batch.prompt_length, batch.response_length, batch.response_mask
end = torch.tensor([r for _, r in lengths])
segments = Segments(end - 4, end - 3, end - 1, torch.ones(B, dtype=torch.bool))


def largest(pairs):
    return max(float((a - b).abs()[mask].max()) for a, b in pairs)
