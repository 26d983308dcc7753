#!/usr/bin/env bash
# Qwen2.5-0.5B-Instruct on GSM8K, 1 GPU (the quick start): GRPO, or OAR by one key.
#
#   python recipes/prepare_data.py --sets gsm8k_train gsm8k_test        # ~/data/gsm8k/*.parquet
#   bash recipes/gsm8k_qwen2.5-0.5b.sh                                   # GRPO baseline
#   ESTIMATOR=oar_g bash recipes/gsm8k_qwen2.5-0.5b.sh                   # OAR-G
#   ESTIMATOR=oar_p bash recipes/gsm8k_qwen2.5-0.5b.sh                   # OAR-P
#   bash recipes/gsm8k_qwen2.5-0.5b.sh trainer.total_epochs=5            # any verl override
#
# Needs: 1 GPU with >= 40 GB (A100 40GB / H100), vLLM. See recipes/README.md.
set -euo pipefail

ESTIMATOR=${ESTIMATOR:-grpo}              # grpo | oar_g | oar_p
DATA_DIR=${DATA_DIR:-$HOME/data}
MODEL=${MODEL:-Qwen/Qwen2.5-0.5B-Instruct}
VERL_MAIN=${VERL_MAIN:-python3 -m verl.trainer.main_ppo}
REWARD_FN="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/rewards.py"  # beside this script

# Optional OAR settings (with verl's entry point, new keys take a leading '+'):
#   +algorithm.oar.answer_pattern=gsm8k      # auto finds '####' as well
#   +algorithm.oar.target=answer_logprob     # OAR-G target: answer_mean (default) | first_answer | answer_logprob
#   +algorithm.oar.quantile=0.25 +algorithm.oar.beta=1.0 +algorithm.oar.min_weight=0.1
#   +algorithm.oar.max_tokens_per_pass=16384 # ~5 GiB with gradient checkpointing; per GPU size: recipes/README.md
#   +algorithm.oar.heatmap_freq=20           # token heatmaps every 20 steps (files, wandb, tensorboard)

$VERL_MAIN \
    algorithm.adv_estimator="$ESTIMATOR" \
    algorithm.use_kl_in_reward=False \
    data.train_files="$DATA_DIR/gsm8k/train.parquet" \
    data.val_files="$DATA_DIR/gsm8k/test.parquet" \
    data.train_batch_size=128 \
    data.max_prompt_length=512 \
    data.max_response_length=1024 \
    data.filter_overlong_prompts=True \
    data.truncation=error \
    reward.custom_reward_function.path="$REWARD_FN" \
    reward.custom_reward_function.name=compute_score \
    actor_rollout_ref.model.path="$MODEL" \
    actor_rollout_ref.model.use_remove_padding=True \
    actor_rollout_ref.model.enable_gradient_checkpointing=True \
    actor_rollout_ref.actor.strategy=fsdp2 \
    actor_rollout_ref.actor.optim.lr=1e-6 \
    actor_rollout_ref.actor.ppo_mini_batch_size=64 \
    actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=16 \
    actor_rollout_ref.actor.use_kl_loss=True \
    actor_rollout_ref.actor.kl_loss_coef=0.001 \
    actor_rollout_ref.actor.kl_loss_type=low_var_kl \
    actor_rollout_ref.actor.entropy_coeff=0 \
    actor_rollout_ref.ref.strategy=fsdp2 \
    actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=32 \
    actor_rollout_ref.rollout.name=vllm \
    actor_rollout_ref.rollout.n=5 \
    actor_rollout_ref.rollout.tensor_model_parallel_size=1 \
    actor_rollout_ref.rollout.gpu_memory_utilization=0.5 \
    actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=32 \
    trainer.logger='["console","tensorboard"]' \
    trainer.project_name=oar_verl_gsm8k \
    trainer.experiment_name="qwen2.5-0.5b-instruct_${ESTIMATOR}" \
    trainer.n_gpus_per_node=1 \
    trainer.nnodes=1 \
    trainer.val_before_train=True \
    trainer.test_freq=10 \
    trainer.save_freq=50 \
    trainer.total_epochs=15 \
    "$@"
