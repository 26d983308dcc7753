"""The batch and model both fused-numerics rank scripts use (built on import: the process group, a tiny
model saved by rank 0, a mixed-length batch and its segments)."""

import os

import torch
import torch.distributed as dist
from tensordict import TensorDict
from verl.utils import tensordict_utils as tu
from verl.workers.utils.padding import left_right_2_no_padding, no_padding_2_padding

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


def verl_pass(engine, temperature: float, micro: int, **settings) -> list[torch.Tensor]:
    """[B, R] log-probs and entropies of the batch from verl's own pass (`infer_batch`) on
    `engine`, `micro` rows a micro-batch; `settings`: the engine's own request keys."""
    data = TensorDict(
        {
            "input_ids": batch.input_ids,
            "attention_mask": batch.attention_mask,
            "position_ids": batch.position_ids,
            "prompts": batch.input_ids[:, :P],
            "responses": batch.responses,
            "response_mask": mask.long(),
        },
        batch_size=[B],
    )
    data = left_right_2_no_padding(data)
    tu.assign_non_tensor(
        data,
        temperature=temperature,
        calculate_entropy=True,
        compute_loss=False,
        use_dynamic_bsz=False,
        micro_batch_size_per_gpu=micro,
        use_fused_kernels=False,
        **settings,
    )
    with engine.eval_mode():
        output = engine.infer_batch(data, loss_function=None)["model_output"]
    return [no_padding_2_padding(output[key], data).float() * mask for key in ("log_probs", "entropy")]
