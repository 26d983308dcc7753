"""The mbridge patches (patches/mbridge-0.15.1/) apply to the installed mbridge 0.15.1, and
on the patched mbridge the CPU backend's mbridge shims step aside while the model builds
and loads the same weights as with the shims."""

import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

from tests.torchrun import run_ranks

pytestmark = pytest.mark.slow

mbridge = pytest.importorskip("mbridge", reason="the megatron extra: pip install 'oar_verl[megatron]'")
PATCHES = sorted((Path(__file__).parents[1] / "patches" / "mbridge-0.15.1").glob("*.patch"))

SCRIPT = textwrap.dedent(
    """
    import os, torch, torch.distributed as dist
    import mbridge
    from megatron.core import parallel_state, tensor_parallel
    from mbridge.core.bridge import Bridge
    from mbridge.core.llm_bridge import LLMBridge
    from oar_verl.core.models import model_parts
    from oar_verl.tiny import byte_tokenizer, tiny_qwen2
    from oar_verl.verl_cpu.megatron import install_model_shims, model_from_hf

    assert mbridge.__file__.startswith(os.environ["PATCHED"]), mbridge.__file__
    dist.init_process_group("gloo")
    hf = tiny_qwen2(len(byte_tokenizer()), hidden_size=32, seed=1).eval()
    path = os.path.join(os.environ["OK_DIR"], "model")
    hf.save_pretrained(path)
    install_model_shims()
    for method in (LLMBridge._get_transformer_layer_spec, Bridge._weight_name_mapping_mcore_to_hf):
        assert not getattr(method, "_oar_cpu_shim", False), f"{method.__qualname__}: the shim patched a patched mbridge"
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
    """
)


def test_patched_mbridge_needs_no_shim(tmp_path):
    source = tmp_path / "site"
    shutil.copytree(Path(mbridge.__file__).parent, source / "mbridge", ignore=shutil.ignore_patterns("__pycache__"))
    for patch in PATCHES:
        result = subprocess.run(["git", "apply", "--directory=site", str(patch)], cwd=tmp_path, capture_output=True, text=True)
        assert result.returncode == 0, (
            f"{patch.name} does not apply to mbridge {mbridge.__version__ if hasattr(mbridge, '__version__') else ''}: {result.stderr}"
        )
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    root = Path(__file__).parents[1]
    run_ranks(SCRIPT, run_dir, 1, env={"PYTHONPATH": f"{source}:{root}", "PATCHED": str(source)})


def test_patches_are_git_format_with_messages():
    assert len(PATCHES) == 2
    for patch in PATCHES:
        text = patch.read_text()
        assert text.startswith("From ") and "Subject: [PATCH" in text and "Unchanged" in text, patch.name
