import numpy as np
import pytest
import torch
import verl  # noqa: F401  (loads the plugin)
from omegaconf import OmegaConf
from verl.trainer.ppo.core_algos import compute_grpo_outcome_advantage, get_adv_estimator_fn

from oar_verl.integration.estimators import compute_oar_outcome_advantage


@pytest.fixture
def group_batch():
    rewards = torch.zeros(6, 5)
    rewards[[0, 2, 3], 4] = 1.0  # groups a: 1,0,1 ; b: 1,0,0
    mask = torch.ones(6, 5)
    mask[1, 3:] = 0
    index = np.array(["a", "a", "a", "b", "b", "b"], dtype=object)
    weights = torch.rand(6, 5, generator=torch.Generator().manual_seed(0)) + 0.5
    return rewards, mask, index, weights


def test_registered_through_the_plugin():
    assert get_adv_estimator_fn("oar_g") is compute_oar_outcome_advantage
    assert get_adv_estimator_fn("oar_p") is compute_oar_outcome_advantage


@pytest.mark.parametrize("norm", [True, False])
def test_weights_times_grpo(group_batch, norm):
    rewards, mask, index, weights = group_batch
    config = OmegaConf.create({"norm_adv_by_std_in_grpo": norm})
    advantages, returns = compute_oar_outcome_advantage(rewards, mask, index, config=config, oar_weights=weights)
    grpo, _ = compute_grpo_outcome_advantage(rewards, mask, index, norm_adv_by_std_in_grpo=norm)
    torch.testing.assert_close(advantages, grpo * weights * mask)
    torch.testing.assert_close(returns, advantages)


def test_without_weights_the_error_says_why(group_batch):
    rewards, mask, index, _ = group_batch
    with pytest.raises(ValueError, match="per-token weights"):
        compute_oar_outcome_advantage(rewards, mask, index)
