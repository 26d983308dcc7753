"""verl on CPU: a `cpu` platform, verl's FSDP engines on gloo, and an `hf` rollout.

Everything here imports verl. The plugin (`oar_verl.plugin`) registers the platform and
the rollout names in every process that imports verl; the engines and the shims for the
few verl internals without an extension point (`shims`) are installed only where the
platform is `cpu` (`VERL_PLATFORM=cpu`), so a GPU run is untouched.
"""
