import math
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from oar_verl.core import bilevel_weights, degenerate_rows, low_signal_rows, permute_within_rows

# Subnormal scores are left out of the formula check: torch's vectorised log1p flushes
# them to zero on some CPUs (see test_a_spread_below_float_resolution_is_degenerate).
SCORES = st.floats(min_value=0.0, max_value=1e4, allow_nan=False, allow_infinity=False, allow_subnormal=False)


@st.composite
def rows(draw, max_rows=5, max_length=12):
    """(scores [B, T] float64, mask [B, T] bool) with masks that are not prefixes only."""
    B = draw(st.integers(1, max_rows))
    T = draw(st.integers(1, max_length))
    scores = torch.tensor(draw(st.lists(st.lists(SCORES, min_size=T, max_size=T), min_size=B, max_size=B)), dtype=torch.float64)
    mask = torch.tensor(draw(st.lists(st.lists(st.booleans(), min_size=T, max_size=T), min_size=B, max_size=B)))
    return scores, mask


def reference_row(scores, q, beta, min_weight, preserve_mass):
    """The spec's formula for one row's reasoning scores (a list), with torch.quantile."""
    levels = [math.log1p(s) for s in scores]
    low, high = min(levels), max(levels)
    if not high - low >= sys.float_info.min:  # constant, to float resolution
        return [1.0] * len(scores)
    n = torch.tensor([(level - low) / (high - low) for level in levels], dtype=torch.float64)
    tau = float(torch.quantile(n, q))
    weights = []
    for value in n.tolist():
        if value < tau:
            weights.append(max(value / tau, min_weight))
        else:
            weights.append(1.0 + beta * ((value - tau) / (1.0 - tau) if tau < 1.0 else 0.0))
    if preserve_mass:
        total = sum(weights)
        weights = [w * len(weights) / total for w in weights]
    return weights


@settings(max_examples=200, deadline=None)
@given(rows(), st.floats(0.05, 0.95), st.floats(0.0, 3.0), st.floats(0.01, 1.0), st.booleans())
def test_matches_the_formula_row_by_row(data, q, beta, min_weight, preserve_mass):
    scores, mask = data
    weights = bilevel_weights(scores, mask, quantile=q, beta=beta, min_weight=min_weight, preserve_mass=preserve_mass)
    for row in range(scores.shape[0]):
        expected = torch.ones(scores.shape[1], dtype=torch.float64)
        if mask[row].any():
            expected[mask[row]] = torch.tensor(
                reference_row(scores[row][mask[row]].tolist(), q, beta, min_weight, preserve_mass), dtype=torch.float64
            )
        torch.testing.assert_close(weights[row].double(), expected, rtol=1e-5, atol=1e-6)


@settings(max_examples=200, deadline=None)
@given(rows(), st.floats(0.05, 0.95), st.floats(0.0, 3.0), st.floats(0.01, 1.0))
def test_bounds_without_mass_preservation(data, q, beta, min_weight):
    scores, mask = data
    weights = bilevel_weights(scores, mask, quantile=q, beta=beta, min_weight=min_weight, preserve_mass=False)
    assert torch.all(weights >= min_weight * (1 - 1e-6)) and torch.all(weights <= (1 + beta) * (1 + 1e-6))


@settings(max_examples=200, deadline=None)
@given(rows(), st.floats(0.05, 0.95), st.floats(0.0, 3.0), st.floats(0.01, 1.0))
def test_mass_preserved_and_ratio_bounded(data, q, beta, min_weight):
    scores, mask = data
    weights = bilevel_weights(scores, mask, quantile=q, beta=beta, min_weight=min_weight).double()
    for row in range(scores.shape[0]):
        if mask[row].any():
            reasoning = weights[row][mask[row]]
            assert abs(float(reasoning.mean()) - 1.0) < 1e-5
            assert float(reasoning.max() / reasoning.min()) <= (1 + beta) / min_weight * (1 + 1e-5)
            assert torch.all(reasoning > 0)


@settings(max_examples=200, deadline=None)
@given(rows(), st.floats(0.05, 0.95), st.floats(0.0, 3.0), st.booleans())
def test_monotone_in_the_score_within_a_row(data, q, beta, preserve_mass):
    scores, mask = data
    weights = bilevel_weights(scores, mask, quantile=q, beta=beta, preserve_mass=preserve_mass)
    for row in range(scores.shape[0]):
        s, w = scores[row][mask[row]], weights[row][mask[row]]
        order = torch.argsort(s, stable=True)
        assert torch.all(w[order].diff() >= -1e-6), (s[order], w[order])


@settings(max_examples=100, deadline=None)
@given(rows(max_rows=4), rows(max_rows=4))
def test_rows_are_independent(first, second):
    """The reference fragment leaked one row's threshold into the next; here a row's
    weights depend only on that row."""
    (a, mask_a), (b, mask_b) = first, second
    width = max(a.shape[1], b.shape[1])
    pad = lambda t, v: torch.nn.functional.pad(t, (0, width - t.shape[1]), value=v)  # noqa: E731
    a, mask_a, b, mask_b = pad(a, 0.0), pad(mask_a, False), pad(b, 0.0), pad(mask_b, False)
    together = bilevel_weights(torch.cat([a, b]), torch.cat([mask_a, mask_b]))
    torch.testing.assert_close(together[: len(a)], bilevel_weights(a, mask_a))
    torch.testing.assert_close(together[len(a) :], bilevel_weights(b, mask_b))
    permutation = torch.randperm(len(a) + len(b))
    shuffled = bilevel_weights(torch.cat([a, b])[permutation], torch.cat([mask_a, mask_b])[permutation])
    torch.testing.assert_close(shuffled, together[permutation])


@settings(max_examples=100, deadline=None)
@given(rows())
def test_ones_outside_the_mask_and_scores_there_ignored(data):
    scores, mask = data
    weights = bilevel_weights(scores, mask)
    assert torch.all(weights[~mask] == 1.0)
    noisy = scores.clone()
    noisy[~mask] = float("nan")
    torch.testing.assert_close(bilevel_weights(noisy, mask), weights)


@pytest.mark.parametrize(
    "row",
    [
        [0.3, 0.3, 0.3],  # constant
        [0.1, float("nan"), 0.5],
        [0.1, float("inf"), 0.5],
        [0.1, float("-inf"), 0.5],
        [2.0],  # a single token: max = min
    ],
)
def test_degenerate_rows_give_ones(row):
    good = [0.1, 0.2, 0.9]
    width = max(len(row), len(good))
    scores = torch.zeros(3, width)
    mask = torch.zeros(3, width, dtype=torch.bool)
    scores[0, : len(row)] = torch.tensor(row)
    mask[0, : len(row)] = True
    scores[1, :3] = torch.tensor(good)
    mask[1, :3] = True  # row 2: empty mask
    weights = bilevel_weights(scores, mask)
    assert torch.all(weights[0] == 1.0) and torch.all(weights[2] == 1.0)
    assert not torch.all(weights[1, :3] == 1.0)
    assert degenerate_rows(scores, mask).tolist() == [True, False, True]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_spread_below_float_resolution_is_degenerate(dtype):
    tiny = torch.finfo(dtype).tiny
    scores = torch.tensor([[0.0, tiny / 4, 0.0], [0.0, tiny, 0.0]], dtype=dtype)
    mask = torch.tensor([[True, True, False], [True, True, False]])
    assert degenerate_rows(scores, mask).tolist() == [True, False]
    weights = bilevel_weights(scores, mask, preserve_mass=False)
    assert weights[0].tolist() == [1.0, 1.0, 1.0]
    torch.testing.assert_close(weights[1], torch.tensor([0.1, 2.0, 1.0]))


def test_known_values():
    # l = log1p(s) = [0, log 2, log 4]: n = [0, 0.5, 1]; tau = quantile_0.25 = 0.25
    scores = torch.tensor([[0.0, 1.0, 3.0]])
    mask = torch.ones_like(scores, dtype=torch.bool)
    raw = bilevel_weights(scores, mask, preserve_mass=False)
    torch.testing.assert_close(raw, torch.tensor([[0.1, 1 + 0.25 / 0.75, 2.0]]))
    kept = bilevel_weights(scores, mask)
    torch.testing.assert_close(kept, raw * 3 / raw.sum())


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"quantile": 0.0}, "quantile"),
        ({"quantile": 1.0}, "quantile"),
        ({"beta": -0.1}, "beta"),
        ({"min_weight": 0.0}, "min_weight"),
        ({"min_weight": 1.5}, "min_weight"),
    ],
)
def test_bad_settings_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        bilevel_weights(torch.rand(2, 3), torch.ones(2, 3, dtype=torch.bool), **kwargs)


def test_bad_inputs_name_the_argument():
    with pytest.raises(ValueError, match="reasoning_mask"):
        bilevel_weights(torch.rand(2, 3), torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="reasoning_mask"):
        bilevel_weights(torch.rand(2, 3), torch.ones(2, 3))
    with pytest.raises(ValueError, match="scores"):
        bilevel_weights(torch.ones(2, 3, dtype=torch.long), torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="scores"):
        bilevel_weights(torch.rand(3), torch.ones(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="scores"):
        bilevel_weights(torch.tensor([[0.5, -0.2]]), torch.ones(1, 2, dtype=torch.bool))


def test_permuted_control_keeps_each_rows_weights_and_moves_them():
    weights = torch.rand(6, 40) + 0.5
    mask = torch.rand(6, 40) < 0.7
    mask[5] = False
    permuted = permute_within_rows(weights, mask, torch.Generator().manual_seed(0))
    assert torch.equal(permuted[~mask], weights[~mask])
    for row in range(6):
        assert torch.equal(permuted[row][mask[row]].sort().values, weights[row][mask[row]].sort().values)
    assert not torch.equal(permuted[mask], weights[mask])  # 5 rows of ~28 entries: some move
    again = permute_within_rows(weights, mask, torch.Generator().manual_seed(0))
    assert torch.equal(permuted, again)


def test_low_signal_rows_by_the_definition():
    """Row 2's largest score is 0.5% of the median row's largest (1.0): below min_signal 0.01.
    Row 3 has no reasoning (never low-signal, not in the median); row 4's non-finite score
    counts as 0."""
    scores = torch.tensor([[1.0, 0.2, 9.0], [0.5, 1.0, 9.0], [0.005, 0.001, 9.0], [7.0, 7.0, 7.0], [float("nan"), 0.004, 9.0], [3.0, 2.0, 9.0]])
    mask = torch.tensor([[True, True, False]] * 3 + [[False] * 3] + [[True, True, False]] * 2)
    # row maxima on the mask: 1.0, 1.0, 0.005, -, 0.004, 3.0; median of the five: 1.0
    assert low_signal_rows(scores, mask, 0.01).tolist() == [False, False, True, False, True, False]
    assert low_signal_rows(scores, mask, 0.004).tolist() == [False, False, False, False, False, False]  # 0.004 is not below 0.004
    assert not bool(low_signal_rows(scores, mask, 0.0).any())
    assert not bool(low_signal_rows(scores, torch.zeros_like(mask), 0.5).any())
    with pytest.raises(ValueError, match=r"min_signal: expected a value in \[0, 1\), got 1.0"):
        low_signal_rows(scores, mask, 1.0)
