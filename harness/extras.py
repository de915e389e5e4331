"""The optional parts of the harness, as pyproject.toml's extras: a format, a training method, a
Hydra launcher or sweeper whose packages are not installed is refused before any work, in one
line that says what to install.

The core (GGUF, the float formats, LoRA and full fine-tuning, local and joblib sweeps) needs
none of them.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import Optional, Sequence

import yaml

from harness.errors import ConfigError, choices

# Hydra plugins by the (group, choice) that selects them: the distribution that provides the
# plugin and the extra that installs it. Our own conf/hydra/launcher/slurm.yaml builds on
# submitit_slurm.
PLUGINS = {
    ("hydra/launcher", "ray"): ("hydra-ray-launcher", "ray"),
    ("hydra/launcher", "ray_aws"): ("hydra-ray-launcher", "ray"),
    ("hydra/launcher", "submitit_local"): ("hydra-submitit-launcher", "slurm"),
    ("hydra/launcher", "submitit_slurm"): ("hydra-submitit-launcher", "slurm"),
    ("hydra/launcher", "slurm"): ("hydra-submitit-launcher", "slurm"),
    ("hydra/sweeper", "optuna"): ("hydra-optuna-sweeper", "search"),
}


def installed_version(distribution: str) -> Optional[str]:
    """The installed version of a distribution, None when it is not installed."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def require(what: str, distributions: Sequence[str], extra: Optional[str]) -> None:
    """ConfigError naming `what` and the install that brings its missing `distributions`:
    the extra's when it has one, else the core's."""
    missing = [d for d in distributions if installed_version(d) is None]
    if missing:
        fix = f"pip install 'slm-harness[{extra}]'" if extra else "run `make setup` (or pip install slm-harness)"
        raise ConfigError(f"{what} needs {choices(missing)}, which is not installed here: {fix}")


def chosen_plugins(argv: Sequence[str], conf_dir: Path) -> list[tuple[str, str]]:
    """The Hydra launcher / sweeper choices a command line makes: its overrides
    (`hydra/launcher=ray`) and the defaults list of the config it names (`--config-dir sweeps
    --config-name search` holds `override hydra/sweeper: optuna`)."""
    args = list(argv)
    chosen = []
    for arg in args:
        group, _, choice = arg.lstrip("+~").partition("=")
        if group.startswith("hydra/") and choice:
            chosen.append((group, choice))
    config_dir = Path(_flag(args, "--config-dir", "-cd") or conf_dir)
    config_name = _flag(args, "--config-name", "-cn") or "config"
    defaults_file = config_dir / f"{config_name.removesuffix('.yaml')}.yaml"
    if defaults_file.is_file():
        for entry in (yaml.safe_load(defaults_file.read_text()) or {}).get("defaults", []):
            for key, choice in entry.items() if isinstance(entry, dict) else []:
                group = str(key).removeprefix("override ").strip()
                if group.startswith("hydra/") and isinstance(choice, str):
                    chosen.append((group, choice))
    return chosen


def _flag(args: list[str], *names: str) -> Optional[str]:
    """The value of a command-line flag given as `--name value` or `--name=value`."""
    for i, arg in enumerate(args):
        for name in names:
            if arg == name and i + 1 < len(args):
                return args[i + 1]
            if arg.startswith(name + "="):
                return arg.split("=", 1)[1]
    return None


def check_plugins(argv: Sequence[str], conf_dir: Path) -> None:
    """Refuse, before Hydra composes anything, a launcher or sweeper whose plugin is missing
    (Hydra itself would only say that it cannot find the config)."""
    for group, choice in chosen_plugins(argv, conf_dir):
        if (group, choice) in PLUGINS:
            distribution, extra = PLUGINS[(group, choice)]
            require(f"{group}={choice}", [distribution], extra)
