"""verl's Megatron engine on the CPU backend: megatron-core and mbridge on a CPU-only torch,
gloo process groups (megatron-core 0.16, mbridge 0.15 on verl's vanilla-mbridge path).

megatron-core is written for CUDA; on a CPU-only torch build it needs the shims below,
installed on the release lines they were written for (`TESTED_RELEASES`, else refused), each
checked against the code it replaces (a shim whose target is not the expected code refuses,
naming it) and stepping aside where it is not needed (a CUDA build, a fixed release):

Model shims (`install_model_shims`: building and running a `GPTModel` through mbridge):
- `torch.cuda.current_device()` answers "cpu" (megatron passes it as a device in about 30
  places: rotary frequencies, masks, parallel layers);
- megatron's model-parallel RNG tracker uses the CPU generator (it reads and writes the
  CUDA generator);
- `nn.Module.cuda()` is a no-op (mbridge's `get_model` moves each chunk with it);
- the attention softmax never picks megatron's fused CUDA kernels (half-precision inputs
  of some shapes would);
- mbridge builds TransformerEngine layers unconditionally: without TransformerEngine it
  builds megatron's local layers (patches/mbridge-0.15.1/0001), whose separate norms
  (`input_layernorm`, `pre_mlp_layernorm`) its weight-name tables then map as the fused
  ones (0002).

Engine shims (`install_engine_shims`: verl's `MegatronEngineWithLMHead` trains and infers):
- a process-wide torch function mode creates tensors asked for with a literal
  `device="cuda"` (pipeline schedules, optimizer, gradient clipping) on the CPU and makes
  CPU tensors report `torch.cuda.*Tensor` types to megatron's optimizer checks; it is
  entered only in a process that builds a Megatron engine on the CPU;
- `torch.cuda.synchronize()` (distributed checkpointing) returns at once;
- a resumed run's distributed optimizer fills its empty torch-optimizer state before it
  loads (megatron does so for its FSDP layout only; with apex or TransformerEngine
  optimizers the step lives in the parameter groups);
- megatron's local attention (the one without TransformerEngine): verl's unpacked
  batches carry a [B, S] padding mask it cannot broadcast (right-padded rows: the causal
  mask alone gives the real tokens the same result), and packed (THD) batches run per
  sequence over `cu_seqlens` (TransformerEngine's varlen kernel has no local equivalent).

`CPUMegatronEngineWithLMHead` is verl's engine with both sets installed first; the CPU
backend registers it for device "cpu" (verl registers its Megatron engines for cuda and
npu only).
"""

from __future__ import annotations

import functools
import importlib.util
import inspect

import torch
from torch.overrides import TorchFunctionMode

from oar_verl.integration.megatron_extra import INSTALL_HINT, megatron_installed
from oar_verl.integration.verl_hooks import is_hooked, mark_hooked, register_cpu_engine


class ShimError(RuntimeError):
    """megatron-core or mbridge is not the release these shims were written for."""


# The releases these shims were written against (the `megatron` extra's ranges).
TESTED_RELEASES = {"megatron-core": "0.16.", "mbridge": "0.15."}


def check_versions() -> None:
    """The installed megatron-core and mbridge are the release lines the shims know."""
    import importlib.metadata

    for package, line in TESTED_RELEASES.items():
        version = importlib.metadata.version(package)
        if not version.startswith(line):
            raise ShimError(f"oar_verl's CPU Megatron backend is written for {package} {line}x, found {version}: {INSTALL_HINT}")


def install_model_shims() -> None:
    """The shims a `GPTModel` built through mbridge needs on a CPU-only torch (idempotent)."""
    if torch.cuda.is_available():
        return
    check_versions()
    _patch_current_device()
    _patch_rng_tracker()
    _patch_module_cuda()
    _patch_fused_softmax()
    _patch_mbridge_layer_spec()
    _patch_mbridge_norm_names()


def install_engine_shims() -> None:
    """The model shims and those verl's Megatron engine needs on the CPU (idempotent)."""
    install_model_shims()
    if torch.cuda.is_available():
        return
    _enter_cuda_as_cpu_mode()
    _patch_cuda_synchronize()
    _patch_optimizer_state_before_load()
    _patch_local_attention()


def _patch_current_device() -> None:
    if is_hooked(torch.cuda.current_device):
        return
    torch.cuda.current_device = mark_hooked(lambda: "cpu")


def _patch_rng_tracker() -> None:
    from megatron.core.tensor_parallel import random as megatron_random

    if is_hooked(megatron_random._get_cuda_rng_state):
        return
    for name, parameters in (
        ("_get_cuda_rng_state", ["device", "clone", "graph_safe"]),
        ("_set_cuda_rng_state", ["new_state", "device", "graph_safe"]),
    ):
        if list(inspect.signature(getattr(megatron_random, name)).parameters) != parameters:
            raise ShimError(f"megatron.core.tensor_parallel.random.{name} is not megatron-core 0.16's ({', '.join(parameters)}): cannot patch")
    torch.cuda.get_rng_state = mark_hooked(lambda device="cuda": torch.get_rng_state())
    torch.cuda.set_rng_state = mark_hooked(lambda new_state, device="cuda": torch.set_rng_state(new_state))
    torch.cuda.manual_seed = mark_hooked(lambda seed: torch.manual_seed(seed))
    megatron_random._get_cuda_rng_state = mark_hooked(lambda device="cuda", clone=False, graph_safe=False: torch.get_rng_state())
    megatron_random._set_cuda_rng_state = mark_hooked(lambda new_state, device=-1, graph_safe=False: torch.set_rng_state(new_state))


def _patch_module_cuda() -> None:
    if is_hooked(torch.nn.Module.cuda):
        return

    def cuda(self, device=None):
        """No-op: a CPU-only torch has no CUDA device to move to."""
        return self

    torch.nn.Module.cuda = mark_hooked(cuda)


def _patch_fused_softmax() -> None:
    from megatron.core.fusions.fused_softmax import FusedScaleMaskSoftmax

    if is_hooked(FusedScaleMaskSoftmax.is_kernel_available):
        return

    def is_kernel_available(self, mask, b, np, sq, sk):
        """False: megatron's fused softmax kernels are CUDA extensions."""
        return False

    FusedScaleMaskSoftmax.is_kernel_available = mark_hooked(is_kernel_available)


def _transformer_engine_installed() -> bool:
    return importlib.util.find_spec("transformer_engine") is not None


def _patch_mbridge_layer_spec() -> None:
    from mbridge.core import llm_bridge
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_decoder_block_spec

    original = llm_bridge.LLMBridge._get_transformer_layer_spec
    if is_hooked(original) or _transformer_engine_installed():
        return
    if hasattr(llm_bridge, "HAVE_TE"):
        return  # mbridge chooses the layers itself (patches/mbridge-0.15.1/0001 adds HAVE_TE)

    @functools.wraps(original)
    def _get_transformer_layer_spec(self, vp_stage=None):
        """mbridge's spec with megatron's local layers (TransformerEngine is not installed)."""
        if self.config.normalization != "RMSNorm":
            raise ValueError(f"mbridge: only RMSNorm is supported, got {self.config.normalization!r}")
        extra = {"vp_stage": vp_stage} if "vp_stage" in inspect.signature(get_gpt_decoder_block_spec).parameters else {}
        self.has_vp_stage = bool(extra)
        return get_gpt_decoder_block_spec(self.config, use_transformer_engine=False, normalization="RMSNorm", **extra)

    llm_bridge.LLMBridge._get_transformer_layer_spec = mark_hooked(_get_transformer_layer_spec)


# megatron's local layers keep the norms TransformerEngine fuses into the next linear layer.
LOCAL_NORM_NAMES = {
    ".input_layernorm.weight": ".self_attention.linear_qkv.layer_norm_weight",
    ".pre_mlp_layernorm.weight": ".mlp.linear_fc1.layer_norm_weight",
}


def _patch_mbridge_norm_names() -> None:
    from mbridge.core import bridge
    from mbridge.core.bridge import Bridge

    original = Bridge._weight_name_mapping_mcore_to_hf
    if is_hooked(original) or hasattr(bridge, "_LOCAL_NORM_NAMES"):
        return  # mbridge maps the local norms itself (patches/mbridge-0.15.1/0002 adds _LOCAL_NORM_NAMES)

    @functools.wraps(original)
    def _weight_name_mapping_mcore_to_hf(self, mcore_weights_name: str) -> list[str]:
        """mbridge's mapping, the local layers' norms named as the fused ones."""
        for local, fused in LOCAL_NORM_NAMES.items():
            if mcore_weights_name.endswith(local):
                mcore_weights_name = mcore_weights_name[: -len(local)] + fused
        return original(self, mcore_weights_name)

    Bridge._weight_name_mapping_mcore_to_hf = mark_hooked(_weight_name_mapping_mcore_to_hf)


def _as_cpu(device):
    if isinstance(device, str) and device.startswith("cuda"):
        return "cpu"
    if isinstance(device, torch.device) and device.type == "cuda":
        return torch.device("cpu")
    return device


class CudaAsCpuMode(TorchFunctionMode):
    """Creates tensors asked for on "cuda" on the CPU, leaves `.cuda()` / `.to("cuda")` in
    place, and answers `Tensor.type()` with the CUDA type name (megatron's optimizer
    accepts only `torch.cuda.*Tensor` parameters). Host memory is not pinned (torch has no
    pinned allocator without an accelerator): verl's Megatron offload asks for it."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if "device" in kwargs:
            kwargs["device"] = _as_cpu(kwargs["device"])
        if kwargs.get("pin_memory"):
            kwargs["pin_memory"] = False
        if func is torch.Tensor.cuda or func is torch.Tensor.pin_memory:
            return args[0]
        if func is torch.Tensor.type and len(args) == 1 and not kwargs:
            name = func(*args)
            return name if name.startswith("torch.cuda.") else name.replace("torch.", "torch.cuda.", 1)
        if func is torch.Tensor.to and len(args) > 1:
            args = (args[0], _as_cpu(args[1]), *args[2:])
        return func(*args, **kwargs)


_MODE: CudaAsCpuMode | None = None


def _enter_cuda_as_cpu_mode() -> None:
    global _MODE
    if _MODE is None:
        _MODE = CudaAsCpuMode()
        _MODE.__enter__()


def _patch_cuda_synchronize() -> None:
    if is_hooked(torch.cuda.synchronize):
        return

    def synchronize(device=None):
        """No-op: CPU work is synchronous."""

    torch.cuda.synchronize = mark_hooked(synchronize)


def _patch_optimizer_state_before_load() -> None:
    from megatron.core.optimizer import distrib_optimizer

    cls = distrib_optimizer.DistributedOptimizer
    original = cls.sharded_state_dict
    if is_hooked(original) or distrib_optimizer.HAVE_APEX_OR_TE:
        return
    if "is_loading" not in inspect.signature(original).parameters or not hasattr(cls, "_init_optimizer_states_with_dummy_values"):
        raise ShimError("megatron's DistributedOptimizer.sharded_state_dict is not the one this shim knows: cannot patch")

    @functools.wraps(original)
    def sharded_state_dict(self, model_sharded_state_dict, is_loading: bool = False, *args, **kwargs):
        """megatron's, with a torch optimizer's empty state filled before a load (its
        `state_dict` reads the step from the per-parameter state)."""
        if is_loading and not self.optimizer.state:
            self._init_optimizer_states_with_dummy_values()
        return original(self, model_sharded_state_dict, is_loading, *args, **kwargs)

    cls.sharded_state_dict = mark_hooked(sharded_state_dict)


def _patch_local_attention() -> None:
    from megatron.core.transformer import dot_product_attention
    from megatron.core.transformer.enums import AttnMaskType

    cls = dot_product_attention.DotProductAttention
    original = cls.forward
    if is_hooked(original):
        return
    if "packed_seq_params" not in inspect.signature(original).parameters:
        raise ShimError("megatron's DotProductAttention.forward has no packed_seq_params: cannot patch")

    @functools.wraps(original)
    def forward(self, query, key, value, attention_mask, attn_mask_type=None, attention_bias=None, packed_seq_params=None):
        """megatron's local attention, on verl's [B, S] padding mask (right-padded rows: the
        causal mask) and on packed sequences (one sequence at a time)."""
        mask_type = attn_mask_type or self.attn_mask_type
        if attention_mask is not None and attention_mask.dim() == 2 and mask_type == AttnMaskType.causal:
            attention_mask = None
        if packed_seq_params is None:
            return original(self, query, key, value, attention_mask, attn_mask_type, attention_bias, None)
        bounds = packed_seq_params.cu_seqlens_q_padded if packed_seq_params.cu_seqlens_q_padded is not None else packed_seq_params.cu_seqlens_q
        bounds = bounds.tolist()
        if query.dim() == 3:  # [T, heads, dim] -> [T, 1, heads, dim]
            query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
        pieces = [original(self, query[a:b], key[a:b], value[a:b], None, AttnMaskType.causal) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
        out = torch.cat(pieces, dim=0)
        if out.shape[0] < query.shape[0]:  # positions past the last sequence
            out = torch.cat([out, out.new_zeros((query.shape[0] - out.shape[0], *out.shape[1:]))], dim=0)
        return out

    cls.forward = mark_hooked(forward)


def cpu_engine_class():
    """verl's `MegatronEngineWithLMHead` that installs the engine shims before it builds."""
    from verl.workers.engine.megatron.transformer_impl import MegatronEngineWithLMHead

    class CPUMegatronEngineWithLMHead(MegatronEngineWithLMHead):
        """verl's Megatron LM engine on the CPU backend (see `oar_verl.verl_cpu.megatron`)."""

        def __init__(self, *args, **kwargs):
            install_engine_shims()
            super().__init__(*args, **kwargs)

    return CPUMegatronEngineWithLMHead


def register_engine() -> None:
    """Registers the CPU Megatron engine for device "cpu" (where megatron-core is installed)."""
    if not megatron_installed():
        return
    register_cpu_engine("language_model", ("megatron",), cpu_engine_class())


def model_from_hf(path: str, dtype: torch.dtype = torch.float32) -> list[torch.nn.Module]:
    """The model chunks verl's Megatron engine builds from the Hugging Face checkpoint at
    `path` (vanilla mbridge, DDP-wrapped with the distributed optimizer's buffers, weights
    loaded), on the model-parallel groups already initialised (`parallel_state`): for
    tests and benchmarks that need the engine's model without the engine."""
    from transformers import AutoConfig
    from verl.models.mcore.mbridge import AutoBridge
    from verl.utils.megatron_utils import McoreModuleWrapperConfig, make_megatron_module

    install_model_shims()
    hf_config = AutoConfig.from_pretrained(path)
    bridge = AutoBridge.from_config(hf_config, dtype=dtype)
    bridge.set_extra_args(sequence_parallel=False)
    wrap = McoreModuleWrapperConfig(wrap_with_ddp=True, use_distributed_optimizer=True)
    chunks, _ = make_megatron_module(wrap, tf_config=bridge.config, hf_config=hf_config, bridge=bridge)
    bridge.load_weights(chunks, path)
    return chunks
