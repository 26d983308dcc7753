"""Attribution on verl's Megatron model (megatron-core GPTModel built by mbridge from the
same weights as a Hugging Face model; gloo, CPU), tensor parallelism 1 and 2: scores equal
to the definition (OAR-P) and to the HF model's (OAR-G, same noise), no gradient in the
parameters or megatron's gradient buffers, modes restored."""

import pytest

from tests.torchrun import run_ranks

pytestmark = pytest.mark.distributed

pytest.importorskip("megatron.core", reason="the megatron extra: pip install 'oar_verl[megatron]'")


@pytest.mark.parametrize("tensor_parallel,tied", [(1, False), (2, True)])
def test_attribution_on_megatron(tmp_path, tensor_parallel, tied):
    run_ranks("tests.ranks.megatron_attribution", tmp_path, tensor_parallel, timeout=600, env={"TIED": str(tied)})
