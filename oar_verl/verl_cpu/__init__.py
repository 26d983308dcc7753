"""verl on CPU: a `cpu` platform, verl's FSDP engines on gloo, and an `hf` rollout.

Everything here imports verl, and nothing here is imported unless the CPU platform is
chosen: the plugin (`oar_verl.plugin`) installs the backend (`backend.install`) only with
`VERL_PLATFORM=cpu`, so a GPU run never loads it. Its changes to verl (registrations and
the shims for the few verl internals without an extension point) are made by
`oar_verl.integration.verl_hooks.install_cpu_backend`.
"""
