"""What the study runs: task, warm-start, RL budget, methods and seeds."""

from __future__ import annotations

from dataclasses import dataclass, field

# (verl estimator, extra overrides) per method; everything else is identical across methods.
METHODS: dict[str, tuple[str, tuple[str, ...]]] = {
    "grpo": ("grpo", ()),
    "oar_g": ("oar_g", ()),
    "oar_p": ("oar_p", ()),
    "oar_g_permuted": ("oar_g", ("algorithm.oar.permute_weights=true",)),
}
METHOD_LABELS = {"grpo": "GRPO", "oar_g": "OAR-G", "oar_p": "OAR-P", "oar_g_permuted": "OAR-G, permuted weights (control)"}


@dataclass(frozen=True)
class StudyPlan:
    """Task: 1 to `max_steps` additions/subtractions of numbers up to `max_operand`, chain
    of thought, GSM8K's `#### answer` (`oar_verl.data.arithmetic`). Warm-start: supervised,
    on traces of which `slip_probability` carry a step error. RL: `rl_steps` steps of
    `train_batch_size` prompts x `rollout_n` samples, learning rate `learning_rate`, greedy
    held-out accuracy every `test_freq` steps on a fixed test set of `test_size` problems.
    """

    methods: tuple[str, ...] = ("grpo", "oar_g", "oar_p", "oar_g_permuted")
    seeds: tuple[int, ...] = (0, 1, 2)
    max_steps: int = 3
    max_operand: int = 9
    slip_probability: float = 0.3
    warm_start_steps: int = 800
    warm_start_seed: int = 0
    train_size: int = 2048
    test_size: int = 256
    rl_steps: int = 40
    test_freq: int = 5
    train_batch_size: int = 16
    rollout_n: int = 8
    learning_rate: float = 1e-4
    max_prompt_length: int = 96  # the chat prompt of a 3-step problem is about 75 byte tokens
    max_response_length: int = 48
    fidelity_responses: int = 64
    fidelity_targets: tuple[str, ...] = ("answer_mean", "first_answer", "answer_logprob")
    extra_overrides: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        unknown = sorted(set(self.methods) - set(METHODS))
        if unknown:
            raise ValueError(f"methods: unknown {unknown}; known: {sorted(METHODS)}")
        if not self.seeds:
            raise ValueError("seeds: at least one seed")
        if self.test_freq < 1 or self.rl_steps < 1:
            raise ValueError("rl_steps and test_freq: expected >= 1")

    def verl_overrides(self, method: str, seed: int) -> list[str]:
        """The hydra overrides of one run (on top of the `cpu` preset and the estimator)."""
        return [
            *METHODS[method][1],
            f"data.seed={seed}",
            f"actor_rollout_ref.rollout.seed={seed}",
            f"algorithm.oar.seed={seed}",
            f"data.train_batch_size={self.train_batch_size}",
            f"actor_rollout_ref.actor.ppo_mini_batch_size={self.train_batch_size}",
            f"actor_rollout_ref.rollout.n={self.rollout_n}",
            f"actor_rollout_ref.actor.optim.lr={self.learning_rate}",
            f"data.max_prompt_length={self.max_prompt_length}",
            f"data.max_response_length={self.max_response_length}",
            "trainer.val_before_train=true",
            f"trainer.test_freq={self.test_freq}",
            *self.extra_overrides,
        ]


FULL = StudyPlan()
# The smoke version runs the runs only the study has: GRPO (the baseline every table
# compares with) and the control; OAR-G (the control without the shuffle) and OAR-P go
# through the same runner and are trained in the e2e tests.
SMOKE = StudyPlan(methods=("grpo", "oar_g_permuted"), seeds=(0,), warm_start_steps=300, train_size=64, test_size=16, rl_steps=2,
                  test_freq=2, train_batch_size=8, rollout_n=8, fidelity_responses=4)  # fmt: skip
