"""Attribution on FSDP2-sharded models (gloo, CPU), world sizes 1 and 2: the same scores
as the unsharded model, no parameter gradients, parameters left sharded."""

import pytest

from tests.torchrun import run_ranks

pytestmark = pytest.mark.distributed


@pytest.mark.parametrize("world_size", [1, 2])
def test_attribution_on_fsdp2(tmp_path, world_size):
    run_ranks("tests.ranks.fsdp_attribution", tmp_path, world_size, timeout=300)
