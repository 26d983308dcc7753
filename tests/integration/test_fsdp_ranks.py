"""Attribution across FSDP2 ranks as verl shards the actor: `verl.utils.fsdp_utils.apply_fsdp2`
(an untied model's `embed_tokens` and `lm_head` wrapped as FSDP modules of their own),
gloo, 2 and 3 ranks, each rank with its own rows: different response lengths (one rank's
responses longer than a 512-token head slice), different numbers of chunks, and a rank
with no attributed row. Every method must keep the ranks' collectives in step (a
mismatch hangs or aborts) and give each rank the scores and log-probs of the unsharded
model; no parameter gradient, parameters left sharded."""

import pytest

from tests.torchrun import run_ranks

pytestmark = pytest.mark.distributed


@pytest.mark.parametrize("world_size", [2, 3])
def test_attribution_across_uneven_fsdp2_ranks(tmp_path, world_size):
    run_ranks("tests.ranks.fsdp_uneven_ranks", tmp_path, world_size, timeout=900, env={"COLLECTIVE_TIMEOUT": "120"})
