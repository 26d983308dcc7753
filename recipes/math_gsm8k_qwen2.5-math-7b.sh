#!/usr/bin/env bash
# Qwen2.5-Math-7B on MATH + GSM8K, 1 node x 8 GPUs, FSDP2 + vLLM (TP 2): GRPO, or OAR by
# one key. Validation on MATH-500, GSM8K test, AIME 2024 and AMC 2023 (4 samples each:
# mean@4 = pass@1, best@4 = pass@4).
#
#   python recipes/prepare_data.py                              # every set
#   bash recipes/math_gsm8k_qwen2.5-math-7b.sh                  # GRPO baseline
#   ESTIMATOR=oar_g bash recipes/math_gsm8k_qwen2.5-math-7b.sh  # OAR-G (or oar_p)
#
# Needs: 8 x 80 GB GPUs (A100 / H100), vLLM. See recipes/README.md.
set -euo pipefail

ESTIMATOR=${ESTIMATOR:-grpo}              # grpo | oar_g | oar_p
# oar_p's mode at these lengths: taylor, fused with the log-prob pass (exact OAR-P is one
# forward per reasoning token: ~1,000x the step's log-prob pass at 3k tokens; README)
OAR_P_MODE=${OAR_P_MODE:-taylor}          # taylor | exact | guided_approx | span_approx
OAR_P_ARGS=()
if [ "$ESTIMATOR" = oar_p ]; then
    OAR_P_ARGS=(+algorithm.oar.perturbation_mode="$OAR_P_MODE")
fi
DATA_DIR=${DATA_DIR:-$HOME/data}
MODEL=${MODEL:-Qwen/Qwen2.5-Math-7B}
VERL_MAIN=${VERL_MAIN:-python3 -m verl.trainer.main_ppo}
REWARD_FN="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/rewards.py"  # beside this script
TRAIN_FILES="['$DATA_DIR/math/train.parquet','$DATA_DIR/gsm8k/train.parquet']"
VAL_FILES="['$DATA_DIR/math500/test.parquet','$DATA_DIR/gsm8k/test.parquet','$DATA_DIR/aime2024/test.parquet','$DATA_DIR/amc2023/test.parquet']"

# Optional OAR settings (new keys take a leading '+' with verl's entry point):
#   +algorithm.oar.answer_pattern=auto       # default: finds '####' (GSM8K rows) and \boxed{} (MATH rows)
#   +algorithm.oar.target=answer_logprob     # OAR-G target: answer_mean (default) | first_answer | answer_logprob
#   +algorithm.oar.max_tokens_per_pass=16384 # 4 sequences of 4k tokens per attribution pass: ~12 GiB with gradient checkpointing (recipes/README.md)
#   +algorithm.oar.heatmap_freq=20

$VERL_MAIN \
    algorithm.adv_estimator="$ESTIMATOR" \
    ${OAR_P_ARGS[@]+"${OAR_P_ARGS[@]}"} \
    algorithm.use_kl_in_reward=False \
    data.train_files="$TRAIN_FILES" \
    data.val_files="$VAL_FILES" \
    data.train_batch_size=512 \
    data.max_prompt_length=1024 \
    data.max_response_length=3072 \
    data.filter_overlong_prompts=True \
    data.truncation=error \
    reward.custom_reward_function.path="$REWARD_FN" \
    reward.custom_reward_function.name=compute_score \
    actor_rollout_ref.model.path="$MODEL" \
    actor_rollout_ref.model.use_remove_padding=True \
    actor_rollout_ref.model.enable_gradient_checkpointing=True \
    actor_rollout_ref.actor.strategy=fsdp2 \
    actor_rollout_ref.actor.optim.lr=1e-6 \
    actor_rollout_ref.actor.ppo_mini_batch_size=128 \
    actor_rollout_ref.actor.use_dynamic_bsz=True \
    actor_rollout_ref.actor.ppo_max_token_len_per_gpu=16384 \
    actor_rollout_ref.actor.use_kl_loss=True \
    actor_rollout_ref.actor.kl_loss_coef=0.001 \
    actor_rollout_ref.actor.kl_loss_type=low_var_kl \
    actor_rollout_ref.actor.entropy_coeff=0 \
    actor_rollout_ref.actor.fsdp_config.param_offload=False \
    actor_rollout_ref.actor.fsdp_config.optimizer_offload=False \
    actor_rollout_ref.ref.strategy=fsdp2 \
    actor_rollout_ref.ref.fsdp_config.param_offload=True \
    actor_rollout_ref.ref.log_prob_use_dynamic_bsz=True \
    actor_rollout_ref.ref.log_prob_max_token_len_per_gpu=32768 \
    actor_rollout_ref.rollout.name=vllm \
    actor_rollout_ref.rollout.n=8 \
    actor_rollout_ref.rollout.tensor_model_parallel_size=2 \
    actor_rollout_ref.rollout.gpu_memory_utilization=0.6 \
    actor_rollout_ref.rollout.log_prob_use_dynamic_bsz=True \
    actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu=32768 \
    actor_rollout_ref.rollout.val_kwargs.n=4 \
    actor_rollout_ref.rollout.val_kwargs.do_sample=True \
    actor_rollout_ref.rollout.val_kwargs.temperature=0.6 \
    actor_rollout_ref.rollout.val_kwargs.top_p=0.95 \
    trainer.logger='["console","tensorboard"]' \
    trainer.project_name=oar_verl_math \
    trainer.experiment_name="qwen2.5-math-7b_${ESTIMATOR}" \
    trainer.n_gpus_per_node=8 \
    trainer.nnodes=1 \
    trainer.val_before_train=True \
    trainer.test_freq=10 \
    trainer.save_freq=50 \
    trainer.total_epochs=10 \
    "$@"
