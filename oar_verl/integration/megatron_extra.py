"""The `megatron` extra (megatron-core, mbridge, einops): whether it is installed, and how to
install it. Imports nothing heavy: the settings checks use it before Ray starts."""

from __future__ import annotations

import importlib.util

INSTALL_HINT = "pip install 'oar_verl[megatron]' (megatron-core, mbridge, einops)"


def megatron_installed() -> bool:
    """True where megatron-core and mbridge can be imported."""
    if importlib.util.find_spec("megatron") is None:
        return False
    return importlib.util.find_spec("megatron.core") is not None and importlib.util.find_spec("mbridge") is not None
