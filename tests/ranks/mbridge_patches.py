"""Rank script, run by `tests.torchrun.run_ranks` on each process: The patched mbridge builds the same model and loads the same weights as with the shims (tests/test_mbridge_patches.py)."""

import os

import mbridge
import torch
import torch.distributed as dist
from mbridge.core.bridge import Bridge
from mbridge.core.llm_bridge import LLMBridge
from megatron.core import parallel_state, tensor_parallel

from oar_verl.core.models import model_parts
from oar_verl.integration.verl_hooks import is_hooked
from oar_verl.tiny.models import byte_tokenizer, tiny_qwen2
from oar_verl.verl_cpu.megatron import install_model_shims, model_from_hf

assert mbridge.__file__.startswith(os.environ["PATCHED"]), mbridge.__file__
dist.init_process_group("gloo")
hf = tiny_qwen2(len(byte_tokenizer()), hidden_size=32, seed=1).eval()
path = os.path.join(os.environ["OK_DIR"], "model")
hf.save_pretrained(path)
install_model_shims()
for method in (LLMBridge._get_transformer_layer_spec, Bridge._weight_name_mapping_mcore_to_hf):
    assert not is_hooked(method), f"{method.__qualname__}: the shim patched a patched mbridge"
parallel_state.initialize_model_parallel(tensor_model_parallel_size=1)
tensor_parallel.model_parallel_cuda_manual_seed(0)
(model,) = model_from_hf(path)
ids = torch.randint(0, 250, (2, 9))
mask, positions = torch.ones_like(ids), torch.arange(9).expand(2, 9)
with torch.no_grad():
    parts, reference = model_parts(model.eval()), model_parts(hf)
    ours = parts.logits(parts.hidden_states(parts.embed(ids), mask, positions))
    theirs = reference.logits(reference.hidden_states(reference.embed(ids), mask, positions))
torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
open(os.path.join(os.environ["OK_DIR"], "rank0.ok"), "w").close()
