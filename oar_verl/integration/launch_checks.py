"""What any verl launch with the plugin installed gets checked for, whatever its estimator,
before Ray starts: an estimator verl knows, mandatory values set, model and tokenizer paths
that exist, and a model context that holds a prompt plus a response."""

from __future__ import annotations

import json
import re
from pathlib import Path

from oar_verl.core.names import did_you_mean

MODEL_KEYS = ("actor_rollout_ref.model.path", "actor_rollout_ref.model.tokenizer_path")
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")  # organisation/name, fetched from the hub at launch
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")


def estimator_errors(config) -> list[str]:
    """`algorithm.adv_estimator` against verl's estimator registry (built-ins, the plugin's
    and any a `verl.plugins` entry point registered), with a did-you-mean."""
    from verl.trainer.ppo import core_algos

    name = str(config.algorithm.adv_estimator)
    known = getattr(core_algos, "ADV_ESTIMATOR_REGISTRY", None)
    if known is None or name in known:
        return []
    return [
        f"algorithm.adv_estimator={name}: no such advantage estimator{did_you_mean(name, known)}; verl knows {', '.join(sorted(known))} "
        "(a custom one must be registered with verl.trainer.ppo.core_algos.register_adv_est in every process, e.g. from a verl.plugins entry point)"
    ]


ALWAYS_USED = ("actor_rollout_ref", "algorithm", "data", "trainer")  # config sections every run reads


def missing_value_errors(config) -> list[str]:
    """Mandatory values (`???` in verl's config) left unset in the sections every run
    reads, e.g. `actor_rollout_ref.rollout.name`."""
    from omegaconf import OmegaConf

    missing = sorted(key for key in OmegaConf.missing_keys(config) if key.split(".")[0] in ALWAYS_USED)
    return [f"{key}: no value (verl's config leaves it to you: ??? in its yaml); set {key}=..." for key in missing]


def model_path_errors(config) -> list[str]:
    """The actor's model and tokenizer: a local path must be a directory with a model config
    (tokenizer files for `tokenizer_path`); hub ids (`org/name`) and remote URLs
    (`hdfs://...`) are fetched at launch and not checked here."""
    errors = []
    for key in MODEL_KEYS:
        value = _select(config, key)
        if value is None or "://" in str(value):
            continue
        if not str(value).strip():
            errors.append(f"{key}: empty; set a model directory or a hub id (organisation/name)")
            continue
        path = Path(str(value)).expanduser()
        if not path.exists():
            if not path.is_absolute() and not str(value).startswith((".", "~")) and HUB_ID.fullmatch(str(value)):
                continue
            errors.append(f"{key}={value}: no such directory, and not a hub id (organisation/name)")
        elif not path.is_dir():
            errors.append(f"{key}={value}: a file; expected a Hugging Face model directory")
        elif key.endswith(".model.path") and not (path / "config.json").exists():
            errors.append(f"{key}={value}: no config.json in this directory: not a Hugging Face model (a checkpoint must be converted first)")
        elif key.endswith("tokenizer_path") and not any((path / name).exists() for name in TOKENIZER_FILES):
            errors.append(f"{key}={value}: no tokenizer files ({', '.join(TOKENIZER_FILES)}) in this directory")
    return errors


def context_warning(config) -> str | None:
    """A warning when a local model's `max_position_embeddings` is shorter than
    `data.max_prompt_length + data.max_response_length` (rollouts would be cut or refused)."""
    path = _select(config, "actor_rollout_ref.model.path")
    model_config = local_model_config(path)
    if model_config is None:
        return None
    config_file = Path(str(path)).expanduser() / "config.json"
    context = model_config.get("max_position_embeddings")
    prompt, response = int(config.data.max_prompt_length), int(config.data.max_response_length)
    if context is None or prompt + response <= int(context):
        return None
    return (
        f"data.max_prompt_length={prompt} + data.max_response_length={response} = {prompt + response} tokens exceed the model's "
        f"context (max_position_embeddings={context} in {config_file}): long rollouts will be cut or refused"
    )


def local_model_config(path) -> dict | None:
    """The Hugging Face config (config.json) of a local model directory; None for a hub id,
    an unset path or a directory without one."""
    config_file = Path(str(path)).expanduser() / "config.json" if path is not None else None
    if config_file is None or not config_file.is_file():
        return None
    return json.loads(config_file.read_text())


def _select(config, key: str):
    from omegaconf import OmegaConf

    return OmegaConf.select(config, key, default=None)
