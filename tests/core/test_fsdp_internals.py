"""`core/models/fsdp_internals.py`: FSDP2's parameter groups on both layouts torch has had (torch
2.11's one group, 2.12+'s list), and a clear refusal of a torch with neither. The real
FSDP2 path runs in `tests/core/test_fsdp.py` and `tests/integration/test_fsdp_ranks.py`
(on torch 2.13 and, in `.ci/run`, torch 2.11)."""

import types

import pytest
from torch import nn

from oar_verl.core.models import fsdp_internals


class Sharded(nn.Module):
    """A module whose `_get_fsdp_state()` returns `state`, as `fully_shard` makes it."""

    def __init__(self, **state):
        super().__init__()
        self.state = types.SimpleNamespace(**state)

    def _get_fsdp_state(self):
        return self.state


def test_torch_2_11_state_has_one_group_or_none():
    group = object()
    assert fsdp_internals.param_groups(Sharded(_fsdp_param_group=group)) == [group]
    assert fsdp_internals.param_groups(Sharded(_fsdp_param_group=None)) == []


def test_torch_2_12_state_has_a_list_of_groups():
    groups = [object(), object()]
    assert fsdp_internals.param_groups(Sharded(_fsdp_param_groups=groups)) == groups


def test_a_torch_with_neither_layout_is_refused_by_name():
    with pytest.raises(fsdp_internals.UnsupportedFSDPInternals, match="_fsdp_param_groups.*_fsdp_param_group.*torch 2.11 to 2.14"):
        fsdp_internals.param_groups(Sharded(other=1))
    with pytest.raises(fsdp_internals.UnsupportedFSDPInternals, match="_get_fsdp_state"):
        fsdp_internals.param_groups(nn.Linear(2, 2))
    with pytest.raises(fsdp_internals.UnsupportedFSDPInternals, match="_lazy_init"):
        fsdp_internals.lazy_init_root(Sharded(_fsdp_param_groups=[]))


def test_lazy_init_calls_the_state():
    calls = []
    fsdp_internals.lazy_init_root(Sharded(_lazy_init=lambda: calls.append(1)))
    assert calls == [1]
