"""The run's full config saved beside its checkpoints, so later commands evaluate what was trained.

`tvq train` writes `config.yaml` into run.out_dir; `tvq val|test|sample` (and a resumed `tvq
train`) read it back from run.out_dir, else run.in_dir, as the config layer right above the preset:
`tvq val -o DIR` then evaluates the model as it was trained, and any flag still overrides it.
No JAX here: this runs while the command line is checked.
"""

from __future__ import annotations

import os
from typing import Any

import yaml
from etils import epath

from tvq.config import Config, ConfigError, RunConfig, to_dict

FILE_NAME = "config.yaml"
LOCATION_FIELDS = ("out_dir", "in_dir")


def _path(directory: str) -> epath.Path:
    return epath.Path(directory if "://" in directory else os.path.abspath(directory))


def load(run: RunConfig) -> tuple[dict[str, Any], str] | None:
    """(the saved config layer, its path) from run.out_dir, else run.in_dir; None if neither has one."""
    for directory in (run.out_dir, run.in_dir):
        if not directory:
            continue
        path = _path(directory) / FILE_NAME
        if path.exists():
            try:
                layer = yaml.safe_load(path.read_text())
            except yaml.YAMLError as error:
                raise ConfigError(f"{path}: saved run config is not valid YAML "
                                  f"({str(error).splitlines()[0]})") from None
            for key in LOCATION_FIELDS:  # where this run reads and writes stays the caller's
                layer.get("run", {}).pop(key, None)
            return layer, str(path)
    return None


def save(config: Config) -> str:
    """Write the config to run.out_dir/config.yaml (atomically on local disks); return the path."""
    directory = _path(config.run.out_dir)
    directory.mkdir(parents=True, exist_ok=True)
    path, partial = directory / FILE_NAME, directory / f".{FILE_NAME}.partial"
    partial.write_text(yaml.safe_dump(to_dict(config), sort_keys=False))
    partial.replace(path)
    return str(path)


__all__ = ["FILE_NAME", "load", "save"]
