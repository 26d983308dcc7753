"""The FSDP2 internals attribution uses, in one place, for every torch verl's users run.

Two things attribution needs have no public torch API:
- the root's lazy initialisation (`FSDPState._lazy_init`), which a forward through the
  root would run first; attribution calls sub-modules directly (`hf.HFParts.materialized`);
- each module's parameter groups, to save and restore `reshard_after_backward`
  (`hf.HFParts.gathered_through_backward`): `FSDPModule.set_reshard_after_backward` sets
  it but nothing reads it back.

The state's groups are `FSDPState._fsdp_param_groups` (a list) from torch 2.12 and
`FSDPState._fsdp_param_group` (one group or None) before it: torch 2.11.0, the release
verl 0.9.1's GPU extras pin. A torch with neither is refused with the attribute names and
the version, before any collective runs, never an `AttributeError` mid-step.
"""

from __future__ import annotations

import torch
from torch import nn


class UnsupportedFSDPInternals(RuntimeError):
    """The installed torch's FSDP2 state lacks what attribution reads."""


def _state(module: nn.Module):
    """The FSDP2 state of a module wrapped by `fully_shard`."""
    get_state = getattr(module, "_get_fsdp_state", None)
    if get_state is None:
        raise UnsupportedFSDPInternals(
            f"torch {torch.__version__}: FSDP2 module {type(module).__name__} has no `_get_fsdp_state()`; "
            "oar_verl reads FSDP2's state on torch 2.11 to 2.14"
        )
    return get_state()


def lazy_init_root(root: nn.Module) -> None:
    """What the root's pre-forward runs first (idempotent): marks the root and shares its
    state with the sub-modules."""
    state = _state(root)
    if not callable(getattr(state, "_lazy_init", None)):
        raise UnsupportedFSDPInternals(
            f"torch {torch.__version__}: FSDPState has no `_lazy_init()`; oar_verl reads FSDP2's state on torch 2.11 to 2.14"
        )
    state._lazy_init()


def param_groups(module: nn.Module) -> list:
    """The module's FSDP2 parameter groups (`FSDPParamGroup`), in torch's order: none, one,
    or several (torch >= 2.12 may hold several per module)."""
    state = _state(module)
    if "_fsdp_param_groups" in vars(state):  # torch >= 2.12
        return list(state._fsdp_param_groups)
    if "_fsdp_param_group" in vars(state):  # torch 2.11
        group = state._fsdp_param_group
        return [] if group is None else [group]
    raise UnsupportedFSDPInternals(
        f"torch {torch.__version__}: FSDPState has neither `_fsdp_param_groups` (torch >= 2.12) nor "
        "`_fsdp_param_group` (torch 2.11); oar_verl reads FSDP2's parameter groups on torch 2.11 to 2.14"
    )
