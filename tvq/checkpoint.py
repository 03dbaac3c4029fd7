"""Orbax checkpoints: parameters, optimizer state, step, RNG and the input pipeline's position.

A checkpoint directory holds one sub-directory per saved step with the items "params",
"train" ({"opt_state", "rng", "step"}) and "data" (the input iterator's state, one JSON file per
process, taken when the save starts).
Checkpoints are written only at sequence boundaries, so the model's recurrent state (which starts
fresh with every sequence, as in the original) is never part of them. Orbax writes each step to a
temporary directory and renames it when complete, so a process killed mid-save leaves the
previous checkpoint as the latest usable one.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from tvq.config import Config, ConfigError, RunConfig

PARAMS, TRAIN, DATA = "params", "train", "data"


def _process_file(directory: epath.Path) -> epath.Path:
    return directory / f"process_{jax.process_index()}-of-{jax.process_count()}.json"


class IteratorStateHandler(ocp.CheckpointHandler):
    """Writes each process's iterator state (bytes or a JSON-able value) to its own file."""

    def save(self, directory: epath.Path, args: IteratorStateSave) -> None:
        """Write this process's state."""
        state = args.state
        record = ({"bytes": state.decode()} if isinstance(state, bytes) else {"json": state})
        directory.mkdir(parents=True, exist_ok=True)
        _process_file(directory).write_text(json.dumps(record))

    def restore(self, directory: epath.Path,
                args: IteratorStateRestore | None = None) -> tuple[Any, str] | None:
        """(state, file name): this process's own file, else the one of process 0 of the run
        that wrote it (the pipeline's position is a global batch index, the same on every
        process); None when there is neither."""
        candidates = [_process_file(directory), *sorted(directory.glob("process_0-of-*.json"))]
        for path in candidates:
            if path.exists():
                record = json.loads(path.read_text())
                state = record["bytes"].encode() if "bytes" in record else record["json"]
                return state, path.name
        return None


@ocp.args.register_with_handler(IteratorStateHandler, for_save=True)
@dataclasses.dataclass
class IteratorStateSave(ocp.args.CheckpointArgs):
    """Save an iterator state snapshot (from iterator.get_state())."""

    state: Any


@ocp.args.register_with_handler(IteratorStateHandler, for_restore=True)
@dataclasses.dataclass
class IteratorStateRestore(ocp.args.CheckpointArgs):
    """Restore this process's iterator state."""


def _path(directory: str) -> epath.Path:
    """An absolute epath for a local path or a gs:// URL."""
    return epath.Path(directory if "://" in directory else os.path.abspath(directory))


def _read_manager(directory: str) -> ocp.CheckpointManager:
    """A manager that never writes (its notices about being read-only are silenced)."""
    absl_logger = logging.getLogger("absl")
    level = absl_logger.level
    absl_logger.setLevel(logging.ERROR)
    try:
        return ocp.CheckpointManager(
            _path(directory), item_names=(PARAMS, TRAIN, DATA),
            options=ocp.CheckpointManagerOptions(read_only=True, create=False))
    finally:
        absl_logger.setLevel(level)


def latest_step(directory: str) -> int | None:
    """The newest complete checkpoint step in `directory`, or None (also when it does not exist)."""
    if not directory or not _path(directory).exists():
        return None
    with _read_manager(directory) as manager:
        return manager.latest_step()


def source_dir(run: RunConfig) -> str | None:
    """Where to restore from: run.out_dir if it holds a checkpoint, else run.in_dir, else None."""
    for directory in (run.out_dir, run.in_dir):
        if latest_step(directory) is not None:
            return directory
    return None


def _fill_shardings(abstract: Any) -> Any:
    """Give abstract leaves without a sharding a fully replicated one over all devices."""
    replicated = NamedSharding(Mesh(np.asarray(jax.devices()), ("all",)), PartitionSpec())
    return jax.tree.map(
        lambda x: x if getattr(x, "sharding", None) is not None
        else jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated), abstract)


def restore_params(config: Config, abstract_params: Any) -> tuple[Any, int]:
    """Restore the newest parameters from run.out_dir, else run.in_dir; return (params, step).

    `abstract_params` is a tree of jax.ShapeDtypeStruct (with shardings where wanted).
    """
    directory = source_dir(config.run)
    if directory is None:
        raise ConfigError(f"run.out_dir / run.in_dir: no checkpoint in {config.run.out_dir!r} "
                          f"or {config.run.in_dir!r}; allowed: a directory written by `tvq train`")
    with _read_manager(directory) as manager:
        step = manager.latest_step()
        restored = manager.restore(step, args=ocp.args.Composite(
            **{PARAMS: ocp.args.StandardRestore(_fill_shardings(abstract_params))}))
    return restored[PARAMS], int(step)


def restore_train_state(directory: str, abstract_state: dict[str, Any],
                        iterator: Any) -> tuple[dict[str, Any], int]:
    """Restore {"params", "opt_state", "rng", "step"} and the iterator's position in place.

    When the checkpoint was written by a different number of processes, the parameters and
    optimizer state are resharded and the input position (a global batch count) carries over.
    """
    abstract_state = _fill_shardings(abstract_state)
    train_part = {key: abstract_state[key] for key in ("opt_state", "rng", "step")}
    with _read_manager(directory) as manager:
        step = int(manager.latest_step())
        try:
            restored = manager.restore(step, args=ocp.args.Composite(**{
                PARAMS: ocp.args.StandardRestore(abstract_state["params"]),
                TRAIN: ocp.args.StandardRestore(train_part),
                DATA: IteratorStateRestore()}))
        except ValueError as error:  # orbax: the saved tree does not match this config's
            raise ConfigError(f"run.out_dir / run.in_dir: the checkpoint {directory}/{step} "
                              "does not fit this config's model or optimizer "
                              f"({str(error).splitlines()[0]}); allowed: the config it was "
                              "written with, or an empty run.out_dir") from None
    if restored[DATA] is None:
        raise ConfigError(f"run.out_dir / run.in_dir: the checkpoint {directory}/{step} has no "
                          "input pipeline position; allowed: a checkpoint written by `tvq train`")
    state, source = restored[DATA]
    iterator.set_state(state)
    if source != _process_file(epath.Path(".")).name:
        print(f"tvq: input position taken from {source} (written by another process count)",
              file=sys.stderr)
    return {"params": restored[PARAMS], **restored[TRAIN]}, step


class CheckpointWriter:
    """Saves the train state and iterator position to run.out_dir, keeping run.keep of them."""

    def __init__(self, run: RunConfig) -> None:
        self.manager = ocp.CheckpointManager(
            _path(run.out_dir), item_names=(PARAMS, TRAIN, DATA),
            options=ocp.CheckpointManagerOptions(max_to_keep=run.keep, create=True))

    def save(self, step: int, state: dict[str, Any], iterator: Any) -> None:
        """Start saving `state` at `step` (async; the arrays are copied before this returns)."""
        train_part = {key: state[key] for key in ("opt_state", "rng", "step")}
        self.manager.save(step, force=True, args=ocp.args.Composite(**{
            PARAMS: ocp.args.StandardSave(state["params"]),
            TRAIN: ocp.args.StandardSave(train_part),
            DATA: IteratorStateSave(iterator.get_state())}))

    def close(self) -> None:
        """Wait for pending saves to finish and release the manager."""
        self.manager.wait_until_finished()
        self.manager.close()


__all__ = ["CheckpointWriter", "IteratorStateHandler", "IteratorStateRestore", "IteratorStateSave",
           "latest_step", "restore_params", "restore_train_state", "source_dir"]
