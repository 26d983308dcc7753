"""The `oar_p` and `oar_g` entries of verl's advantage-estimator registry.

verl calls a registered estimator with fixed inputs (token_level_rewards, response_mask,
index, config); OAR also needs per-token weights, which come from the attribution step
(`trainer.OARStep` in verl's v1 trainers, or a trainer that passes `oar_weights`, as the upstream patch
in `patches/` lets estimators declare). The estimator is GRPO's advantage times those
weights.
"""

from __future__ import annotations

import torch


def compute_oar_outcome_advantage(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index,
    epsilon: float = 1e-6,
    norm_adv_by_std_in_grpo: bool | None = None,
    config=None,
    oar_weights: torch.Tensor | None = None,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """OAR advantages: A[i, t] = w[i, t] * A_grpo[i] (Li et al., arXiv 2601.07408).

    Args:
        token_level_rewards: (bs, response_length) rewards.
        response_mask: (bs, response_length) 1 on response tokens.
        index: (bs,) group ids (uid).
        epsilon: GRPO's std epsilon.
        norm_adv_by_std_in_grpo: divide by the group std; None reads
            `config.norm_adv_by_std_in_grpo` (default True).
        config: the `algorithm` config.
        oar_weights: (bs, response_length) Bi-Level weights from the attribution step.

    Returns:
        (advantages, returns), both (bs, response_length).
    """
    from verl.trainer.ppo.core_algos import compute_grpo_outcome_advantage

    if oar_weights is None:
        raise ValueError(
            "oar_p/oar_g need per-token weights from the OAR attribution step; run through verl's v1 "
            "synchronous trainer with the oar_verl plugin installed (or pass oar_weights)"
        )
    if norm_adv_by_std_in_grpo is None:
        norm_adv_by_std_in_grpo = True if config is None else bool(config.get("norm_adv_by_std_in_grpo", True))
    advantages, _ = compute_grpo_outcome_advantage(
        token_level_rewards, response_mask, index, epsilon=epsilon, norm_adv_by_std_in_grpo=norm_adv_by_std_in_grpo, config=config
    )
    advantages = advantages * oar_weights * response_mask
    return advantages, advantages
