"""What the study runs: task, warm-start, RL budget, methods and seeds; the plans by name."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from dataclasses import dataclass, field

NO_CLIPPING = 1e9  # verl's actor always clips (`optim.clip_grad`); gradient norms here stay below 10
# (verl estimator, extra overrides) per method; everything else is identical across methods.
METHODS: dict[str, tuple[str, tuple[str, ...]]] = {
    "grpo": ("grpo", ()),
    "oracle": ("oar_g", ("algorithm.oar.oracle=true",)),
    "oar_g": ("oar_g", ()),
    "oar_p": ("oar_p", ()),
    "oar_p_taylor": ("oar_p", ("algorithm.oar.perturbation_mode=taylor",)),
    "oar_g_permuted": ("oar_g", ("algorithm.oar.permute_weights=true",)),
    # the oracle's scores with the Bi-Level boost at 40: its error token's weight 41 against
    # about 1 for each other reasoning token (beta 1 gives 2), about half of a 40-token
    # response's advantage on it (the follow-up after the gate, `CHAINS_FOLLOWUP`)
    "oracle_concentrated": ("oar_g", ("algorithm.oar.oracle=true", "algorithm.oar.beta=40")),
    # the clipping runs (`CHAINS_CLIPPING`): the same arms with verl's gradient clipping off
    "grpo_unclipped": ("grpo", (f"actor_rollout_ref.actor.optim.clip_grad={NO_CLIPPING}",)),
    "oracle_concentrated_unclipped": (
        "oar_g",
        ("algorithm.oar.oracle=true", "algorithm.oar.beta=40", f"actor_rollout_ref.actor.optim.clip_grad={NO_CLIPPING}"),
    ),
}
METHOD_LABELS = {"grpo": "GRPO", "oracle": "oracle (perfect attribution)", "oar_g": "OAR-G", "oar_p": "OAR-P", "oar_p_taylor": "OAR-P taylor",
                 "oar_g_permuted": "OAR-G, permuted weights (control)", "oracle_concentrated": "oracle, boost 40 (concentrated)",
                 "grpo_unclipped": "GRPO, clipping off", "oracle_concentrated_unclipped": "oracle, boost 40, clipping off"}  # fmt: skip


@dataclass(frozen=True)
class StudyPlan:
    """Task: `min_steps` to `max_steps` additions/subtractions of numbers up to
    `max_operand` (modulo `modulus` when set), chain of thought, GSM8K's `#### answer`
    (`oar_verl.tiny.arithmetic`). Warm-start: supervised, `warm_start_steps` steps (or,
    with `warm_start_target_accuracy`, until that greedy accuracy, at most that many;
    learning rate `warm_start_learning_rate`) on traces of which `slip_probability` carry
    a step error, and whose wrapping steps slip with `wrap_slip_probability`; a plan with
    a shipped model (`runner.STORED_WARM_STARTS`) uses it instead. RL: `rl_steps` steps of `train_batch_size` prompts x
    `rollout_n` samples, learning rate `learning_rate`, greedy held-out accuracy every
    `test_freq` steps on a fixed test set of `test_size` problems.

    `gate_methods` (the oracle and GRPO, or none) run on every seed first; the other
    methods run only when the oracle beats GRPO beyond its interval (`study.statistics`).
    `save_freq`: verl checkpoints every N steps, from which a cut-short run resumes.
    """

    name: str = "first"
    methods: tuple[str, ...] = ("grpo", "oar_g", "oar_p", "oar_g_permuted")
    gate_methods: tuple[str, ...] = ()
    seeds: tuple[int, ...] = (0, 1, 2)
    min_steps: int = 1
    max_steps: int = 3
    max_operand: int = 9
    modulus: int | None = None
    slip_probability: float = 0.3
    wrap_slip_probability: float = 0.0
    warm_start_steps: int = 800
    warm_start_learning_rate: float = 3e-3
    warm_start_target_accuracy: float | None = None
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
    save_freq: int = 0
    extra_overrides: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        unknown = sorted(set(self.methods) - set(METHODS))
        if self.gate_methods and set(self.gate_methods) != {"grpo", "oracle"} or not set(self.gate_methods) <= set(self.methods):
            raise ValueError(f"gate_methods: expected ('grpo', 'oracle') among the methods, or none; got {self.gate_methods}")
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
            *([f"trainer.save_freq={self.save_freq}", "trainer.resume_mode=auto"] if self.save_freq else []),
            *self.extra_overrides,
        ]

    @property
    def task(self) -> dict:
        """The task's shape, as `data.arithmetic.make_problem` takes it."""
        return {"min_steps": self.min_steps, "max_steps": self.max_steps, "max_operand": self.max_operand, "modulus": self.modulus}

    def run_order(self) -> list[tuple[str, int]]:
        """(method, seed) in the order they run: the gate's methods on every seed first, then
        seeds outermost, so that a cut-short study still compares every method."""
        rest = [method for method in self.methods if method not in self.gate_methods]
        gate = [(method, seed) for seed in self.seeds for method in self.gate_methods]
        return gate + [(method, seed) for seed in self.seeds for method in rest]


FULL = StudyPlan()  # the first study (docs/results_first.md)
# The smoke version runs the runs only the study has: GRPO (the baseline every table
# compares with), the oracle and the control; OAR-G (the control without the shuffle) and
# OAR-P go through the same runner and are trained in the e2e tests.
SMOKE = StudyPlan(name="smoke", methods=("grpo", "oracle", "oar_g_permuted"), seeds=(0,), warm_start_steps=300, train_size=64, test_size=16, rl_steps=2,
                  test_freq=2, train_batch_size=8, rollout_n=8, fidelity_responses=4)  # fmt: skip

# The powered study (issue 24): chains of 5-6 steps modulo 10 (every value and the answer one
# byte token), errors concentrated in the steps that wrap around (carries and borrows),
# an oracle arm bounding what attribution can give, 6 seeds, 512 held-out problems.
CHAINS = StudyPlan(
    name="chains", methods=("grpo", "oracle", "oar_g", "oar_p_taylor", "oar_g_permuted"), gate_methods=("grpo", "oracle"),
    seeds=(0, 1, 2, 3, 4, 5), min_steps=5, max_steps=6, max_operand=9, modulus=10, slip_probability=0.0, wrap_slip_probability=0.3,
    warm_start_steps=3000, warm_start_learning_rate=2e-3, warm_start_target_accuracy=0.5, train_size=4096, test_size=512, rl_steps=60, test_freq=10, train_batch_size=8, rollout_n=8,
    learning_rate=1e-4, max_prompt_length=96, max_response_length=64, fidelity_responses=64, save_freq=20,
)  # fmt: skip
# The follow-up after the chains study's gate (exploratory, not pre-registered): is the
# oracle's null a property of credit assignment on this task, or of the Bi-Level rule, which
# at its defaults gives a token with tied-low neighbours at most twice their weight? Same
# plan but the arm; its GRPO comparison takes the chains study's GRPO runs (same settings,
# seeds and warm start: `SHARED_WARM_STARTS`), its page is a section of the chains page.
CHAINS_FOLLOWUP = dataclasses.replace(CHAINS, name="chains_followup", methods=("oracle_concentrated",), gate_methods=())
FOLLOW_UPS = {"chains": "chains_followup"}  # plan -> the follow-up whose runs its page reports
# Does verl's gradient clipping explain the follow-up's loss? (pre-registered in results.md, one
# seed: a weak test) GRPO and the concentrated oracle with clipping at 1 and off, on today's presets.
CHAINS_CLIPPING = dataclasses.replace(CHAINS, name="chains_clipping", methods=("grpo", "oracle_concentrated", "grpo_unclipped", "oracle_concentrated_unclipped"),
                                      gate_methods=(), seeds=(0,))  # fmt: skip
SHARED_WARM_STARTS = {"chains_followup": "chains", "chains_clipping": "chains"}  # plan -> the plan whose shipped warm start it uses
PLANS = {plan.name: plan for plan in (FULL, SMOKE, CHAINS, CHAINS_FOLLOWUP, CHAINS_CLIPPING)}


# The paired gradient-level test (`gradient_test.py`, pre-registered in docs/results.md).
@dataclass(frozen=True)
class GradientPlan:
    """The test's settings (docs/results.md, the pre-registration): tasks (name -> filler
    letters after each step line), checkpoints, batches, the reference pool, the warmed
    AdamW state, the GRPO checkpoint's steps and the filler warm start's fine-tuning."""

    name: str = "gradients"
    tasks: dict[str, int] = field(default_factory=lambda: {"chains": 0, "filler": 8})
    max_new_tokens: dict[str, int] = field(default_factory=lambda: {"chains": 64, "filler": 128})
    batches: int = 100
    prompts: int = 8
    samples: int = 8
    reference_prompts: int = 256
    reference_samples: int = 16
    reference_chunk_prompts: int = 16
    warm_state_batches: int = 20
    grpo_steps: int = 40
    learning_rate: float = 1e-4
    clip_grad: float = 1.0
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    mask_floor: float = 0.1
    filler_learning_rate: float = 1e-3
    filler_target_accuracy: float = 0.45
    filler_max_steps: int = 3000
    filler_evaluate_every: int = 100

    def problems(self, task: str) -> Callable[[random.Random, int], list]:
        """`draw(rng, n)`: n problems of `task` (the chains study's shape; exact traces)."""
        from oar_verl.tiny.arithmetic import make_problem

        shape = {"max_steps": CHAINS.max_steps, "max_operand": CHAINS.max_operand, "min_steps": CHAINS.min_steps, "modulus": CHAINS.modulus}
        return lambda rng, n: [make_problem(rng, **shape, filler=self.tasks[task]) for _ in range(n)]


GRADIENTS = GradientPlan()
