"""User errors: one exception for what a user can fix, reported as one message and exit
status 2 by the entry points."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

USAGE_ERROR = 2  # exit status of a refused command line or configuration (argparse's)


class SettingsError(ValueError):
    """A configuration, command line or input file that cannot run, found before anything
    expensive starts; its message names the key (or file and row) at fault."""


@contextmanager
def exit_on_settings_error(program: str) -> Iterator[None]:
    """Runs the body; a `SettingsError` ends the process with `program: error: MESSAGE` on
    stderr and exit status 2, without a traceback."""
    try:
        yield
    except SettingsError as error:
        print(f"{program}: error: {error}", file=sys.stderr)
        sys.exit(USAGE_ERROR)
