"""The hydra command lines of verl's entry points, composed in this process as `hydra.main`
composes them, with every mistake in them a `SettingsError` naming the override: a key
the configuration lacks (with a did-you-mean), an override hydra cannot parse, a config
name that does not exist, a value of the wrong type."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import verl
from omegaconf import DictConfig, OmegaConf

from oar_verl.core.names import did_you_mean
from oar_verl.integration.errors import SettingsError

VERL_CONFIG_DIR = Path(verl.__file__).parent / "trainer" / "config"
OAR_CONFIG_DIR = Path(__file__).parent.parent / "config"  # oar_verl.main_ppo's presets
OAR_PREFIX = "algorithm.oar"
CONFIG_OPTIONS = ("--config-path", "-cp", "--config-name", "-cn")


@dataclasses.dataclass(frozen=True)
class CommandLine:
    """A hydra command line: its config folder and name, and the overrides."""

    config_dir: Path
    config_name: str
    overrides: list[str]

    @classmethod
    def parse(cls, argv: list[str], config_dir: Path, config_name: str) -> CommandLine:
        """`--config-path`/`-cp` and `--config-name`/`-cn` (with a space or `=`) taken
        out of `argv`, the rest overrides; a name without `--config-path` is looked up in
        oar_verl's presets, then verl's configs. Other options are refused."""
        overrides, explicit_dir, arguments = [], None, list(argv)
        while arguments:
            argument = arguments.pop(0)
            option, sep, value = argument.partition("=") if argument.startswith("-") else (argument, "", "")
            if option in CONFIG_OPTIONS:
                if not sep:
                    if not arguments:
                        raise SettingsError(f"{option}: expects a value")
                    value = arguments.pop(0)
                if option in ("--config-path", "-cp"):
                    explicit_dir = Path(value).expanduser().resolve()
                else:
                    config_name = value.removesuffix(".yaml")
            elif argument.startswith("-"):
                raise SettingsError(f"{argument}: unknown option (this command takes --config-path, --config-name and KEY=VALUE overrides)")
            else:
                overrides.append(argument)
        if explicit_dir is not None:
            config_dir = explicit_dir
        elif (OAR_CONFIG_DIR / f"{config_name}.yaml").exists():
            config_dir = OAR_CONFIG_DIR
        elif (VERL_CONFIG_DIR / f"{config_name}.yaml").exists():
            config_dir = VERL_CONFIG_DIR
        return cls(config_dir, config_name, overrides)


def available_configs() -> list[str]:
    """Config names `--config-name` accepts without `--config-path`: oar_verl's presets
    (the files with a `hydra:` section; the others are fragments they include) and verl's
    configs (but its `_generated` references)."""
    presets = [path.stem for path in OAR_CONFIG_DIR.glob("*.yaml") if "\nhydra:" in f"\n{path.read_text()}"]
    return sorted(presets + [path.stem for path in VERL_CONFIG_DIR.glob("*.yaml") if not path.stem.startswith("_")])


def compose_config(command: CommandLine) -> DictConfig:
    """The configuration `hydra.main` would give `command`'s entry point (unresolved);
    user mistakes raise `SettingsError`."""
    from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException

    if not command.config_dir.is_dir():
        raise SettingsError(f"--config-path {command.config_dir}: no such directory")
    try:
        config = _compose(command.config_dir, command.config_name, command.overrides)
    except MissingConfigException:
        raise SettingsError(
            f"--config-name {command.config_name}: no such config in {command.config_dir}{did_you_mean(command.config_name, available_configs())}; "
            f"available: {', '.join(available_configs())}"
        ) from None
    except OverrideParseException as error:
        raise SettingsError(
            f"cannot parse an override: {str(error).splitlines()[0]}; quote values with characters hydra reads ({{}}[](),=' and spaces), "
            "e.g. 'algorithm.oar.answer_pattern=\"(?P<answer>\\d+)$\"' in the shell"
        ) from None
    except ConfigCompositionException as error:
        raise SettingsError(_composition_message(command, error)) from None
    type_errors = _type_errors(_compose(command.config_dir, command.config_name, []), command.overrides)
    if type_errors:
        raise SettingsError("\n  - ".join(["wrong value types:", *type_errors]))
    return config


def _compose(config_dir: Path, config_name: str, overrides: list[str]) -> DictConfig:
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(config_dir), version_base=None):
        return compose(config_name=config_name, overrides=overrides)


def _composition_message(command: CommandLine, error: Exception) -> str:
    """A key the configuration lacks, named with a did-you-mean, or hydra's own message."""
    cause = error.__cause__
    full_key = getattr(cause, "full_key", None)
    override = next((item for item in command.overrides if full_key and _names_key(item, full_key)), None)
    if not full_key or override is None:
        return str(error).splitlines()[0] + (f": {str(cause).splitlines()[0]}" if cause is not None else "")
    key = override.lstrip("+~").split("=")[0]
    base = _compose(command.config_dir, command.config_name, [])
    if key.startswith(f"{OAR_PREFIX}.") and OmegaConf.select(base, OAR_PREFIX) is None:
        return (
            f"{override}: verl's config declares no algorithm.oar (the plugin's settings); write +{override} with verl's entry point, "
            "or run python -m oar_verl.main_ppo, whose configs declare it"
        )
    parent, missing = _deepest_existing(base, key)
    choices = list(parent.keys()) if isinstance(parent, DictConfig) else []
    where = ".".join(key.split(".")[: len(key.split(".")) - len(missing)]) or "the top level"
    adding = "" if key.startswith(f"{OAR_PREFIX}.") else f"; to add a new key write +{override.lstrip('+')}"
    return f"{override}: the config has no key {'.'.join(key.split('.')[: len(key.split('.')) - len(missing) + 1])}{did_you_mean(missing[0], choices)} under {where}{adding}"


def _names_key(override: str, full_key: str) -> bool:
    """Whether `override` sets `full_key` or a key below it."""
    key = override.lstrip("+~").split("=")[0]
    return key == full_key or key.startswith(f"{full_key}.")


def _deepest_existing(config: DictConfig, key: str) -> tuple[object, list[str]]:
    """(the deepest node of `key`'s path that exists, the path's parts below it)."""
    node, parts = config, key.split(".")
    for depth, part in enumerate(parts):
        if not isinstance(node, DictConfig) or part not in node:
            return node, parts[depth:]
        node = OmegaConf.select(node, part, throw_on_resolution_failure=False)
    return node, []


TYPE_NAMES = {bool: "true or false", int: "an integer", float: "a number"}


def _type_errors(base: DictConfig, overrides: list[str]) -> list[str]:
    """Overrides giving text where the configuration's default is a boolean or a number."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    errors = []
    for override in OverridesParser.create().parse_overrides(overrides):
        if override.is_add() or override.is_delete() or override.is_sweep_override():
            continue
        key, value = override.key_or_group, override.value()
        default = _select_raw(base, key)
        expected = type(default) if type(default) in TYPE_NAMES else None
        if expected is None or not isinstance(value, str) or "${" in value:  # an interpolation resolves later
            continue
        errors.append(f"{key}={value}: expected {TYPE_NAMES[expected]} (the default is {default!r}), got the text {value!r}")
    return errors


def _select_raw(config: DictConfig, key: str):
    """`key`'s value without resolving interpolations (None where it is one, or absent)."""
    parent, missing = _deepest_existing(config, key.rsplit(".", 1)[0]) if "." in key else (config, [])
    if missing or not isinstance(parent, DictConfig):
        return None
    leaf = key.rsplit(".", 1)[-1]
    if leaf not in parent:
        return None
    value = OmegaConf.to_container(parent, resolve=False).get(leaf)
    return None if isinstance(value, str) and "${" in value else value


def hydra_entry_help(program: str, docstring: str) -> str:
    """`--help` of a hydra entry point: its usage and purpose, and the OAR settings, instead
    of verl's whole configuration (`--cfg job` prints that)."""
    from oar_verl.integration.config import settings_summary

    return (
        f"usage: {program} [--config-name NAME] [--config-path DIR] [KEY=VALUE ...]\n\n{docstring.strip()}\n\n"
        "Overrides are hydra's: KEY=VALUE changes a key of the config, +KEY=VALUE adds one, quote values holding {}[](),= or spaces.\n"
        f"The OAR settings (algorithm.oar.*; with verl's own entry point and config write +algorithm.oar.KEY=VALUE):\n{settings_summary()}\n\n"
        "Each setting in full: README.md, \"OAR in a verl recipe\"; verl's own keys: verl's trainer/config/ppo_trainer.yaml."
    )
