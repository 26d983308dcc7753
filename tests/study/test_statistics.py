"""The study's pre-registered statistics against their definitions."""

import itertools
import statistics

import pytest
from scipy import stats

from oar_verl.study.statistics import contrasts, gate_passed, holm, primary_metric, sign_flip_p, t_interval


def run(method: str, seed: int, accuracies: list[float]) -> dict:
    return {"method": method, "seed": seed, "accuracy": {str(10 * step): value for step, value in enumerate(accuracies)}}


def test_primary_metric_leaves_out_the_evaluation_before_training():
    assert primary_metric(run("grpo", 0, [0.9, 0.5, 0.7])) == pytest.approx(0.6)
    with pytest.raises(ValueError, match="run grpo seed 0: no held-out evaluation after step 0"):
        primary_metric(run("grpo", 0, [0.9]))


def test_t_interval_is_students():
    values = [0.03, -0.01, 0.02, 0.05, 0.00, 0.04]
    mean, low, high = t_interval(values)
    expected = stats.ttest_1samp(values, 0.0).confidence_interval(0.95)
    assert mean == pytest.approx(statistics.fmean(values)) and (low, high) == pytest.approx((expected.low, expected.high))


def test_sign_flip_p_enumerates_every_sign_pattern():
    assert sign_flip_p([0.1] * 6) == pytest.approx(2 / 64)  # only all + and all - are as extreme
    values = [0.3, -0.1, 0.2, 0.05]
    observed = abs(sum(values))
    brute = sum(abs(sum(s * v for s, v in zip(signs, values))) >= observed - 1e-12 for signs in itertools.product((1, -1), repeat=4)) / 16
    assert sign_flip_p(values) == pytest.approx(brute) and 0 < brute < 1


def test_holm_steps_down_and_stays_monotone():
    assert holm({"a": 0.01, "b": 0.04, "c": 0.03}) == pytest.approx({"a": 0.03, "c": 0.06, "b": 0.06})
    assert holm({"a": 0.5, "b": 0.6}) == pytest.approx({"a": 1.0, "b": 1.0})


def test_contrasts_pair_by_seed_and_the_gate_reads_the_interval():
    runs = [run("grpo", seed, [0.5, 0.5 + 0.01 * seed, 0.5]) for seed in range(6)]
    runs += [run("oracle", seed, [0.5, 0.55 + 0.01 * seed + 0.002 * (seed % 2), 0.56]) for seed in range(6)]
    runs += [run("oar_g", seed, [0.5, 0.5 + 0.01 * seed, 0.5]) for seed in range(3)]  # 3 seeds so far
    oracle, oar_g = contrasts(runs, [("oracle", "grpo"), ("oar_g", "grpo"), ("oar_p", "grpo")])  # no oar_p runs: left out
    assert oracle.seeds == tuple(range(6)) and oracle.differences[1] == pytest.approx((0.562 + 0.56) / 2 - 0.505)
    assert (
        oracle.low > 0 and oracle.p_sign_flip == pytest.approx(2 / 64) and oracle.p_holm == pytest.approx(3 * 2 / 64)
    )  # Holm over all 3 pairs, oar_p's at p = 1
    assert oar_g.seeds == (0, 1, 2) and oar_g.mean == pytest.approx(0.0)
    passed, contrast = gate_passed(runs)
    assert passed and contrast.name == "oracle - grpo"
    assert not gate_passed([run("grpo", s, [0.5, 0.50 + 0.01 * (s % 2)]) for s in range(6)] + [run("oracle", s, [0.5, 0.505]) for s in range(6)])[0]
