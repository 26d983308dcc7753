import pytest
from hydra import compose, initialize_config_module

from tests.fixtures.models import QUICKSTART_MODEL


@pytest.fixture
def cpu_config():
    """A CPU preset (`cpu`, or `cpu_megatron` by `name`) composed as `python -m oar_verl.main_ppo --config-name cpu` does."""

    def build(*overrides, name="cpu"):
        with initialize_config_module(config_module="oar_verl.config", version_base=None):
            return compose(
                config_name=name, overrides=["data.train_files=x", "data.val_files=x", f"actor_rollout_ref.model.path={QUICKSTART_MODEL}", *overrides]
            )

    return build
