"""A did-you-mean for names typed wrong (settings, targets, modes, estimators)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """ " (did you mean 'x'?)" for the closest of `choices` (case, '-' and '_' ignored
    first), or "" when none is close."""
    choices = list(choices)
    normalised = {choice.lower().replace("-", "_"): choice for choice in choices}
    match = normalised.get(str(name).lower().replace("-", "_"))
    if match is None:
        close = difflib.get_close_matches(str(name), choices, n=1, cutoff=0.6)
        match = close[0] if close else None
    return f" (did you mean {match!r}?)" if match is not None else ""
