"""Shared helpers for the training, checkpoint and CLI tests: a tiny config and a trained run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import jax
import pytest

from tvq.config import Config, build

# Flags for `tvq` (and config layers) that make a model that compiles and trains in seconds.
TINY_FLAGS = ["--set", "model.d_model=32", "--set", "model.d_k=16", "--set", "model.d_v=64",
              "--set", "model.n_layer=1", "-s", "8", "-l", "16", "-m", "16", "-t", "64",
              "--set", "data.update_len=32", "--batch-size", "2",
              "--set", "optimizer.warmup_steps=2", "--set", "run.log_every=2"]
TINY = {"model": dict(d_model=32, d_k=16, d_v=64, n_layer=1, n_code=8, block_len=16, mem_len=16),
        "data": dict(sequence_len=64, update_len=32, global_batch_size=2),
        "optimizer": dict(warmup_steps=2), "run": dict(log_every=2)}


def tiny_config(out_dir: str, **sections: dict[str, Any]) -> Config:
    """The cpu preset shrunk to TINY, writing to out_dir, with more overrides per section."""
    layers = [TINY, {"run": {"out_dir": str(out_dir)}}, sections]
    return build("cpu", layers)


def compile_cache_env(cache_dir: str) -> dict[str, str]:
    """Environment for a `tvq` subprocess that shares the persistent compilation cache."""
    return {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_COMPILATION_CACHE_DIR": cache_dir,
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
            "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}


# A persistent compilation cache for in-process runs and `tvq` subprocesses. It only saves
# compile time (a cached program is the same program). Set at import, i.e. during collection,
# because JAX decides once, at its first compile, whether a process uses the cache.
COMPILE_CACHE = str(Path(__file__).resolve().parent.parent / ".pytest_cache" / "tvq_jax_cache")
jax.config.update("jax_compilation_cache_dir", COMPILE_CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


@pytest.fixture(scope="session")
def compile_cache() -> str:
    """The compilation cache directory (see COMPILE_CACHE)."""
    return COMPILE_CACHE


def run_tvq(args: list[str], cache_dir: str, timeout: int = 240,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run `python -m tvq ARGS` to completion (env: default, the compile-cache environment)."""
    return subprocess.run([sys.executable, "-m", "tvq", *args], capture_output=True, text=True,
                          env=env or compile_cache_env(cache_dir), timeout=timeout)


_TRAINED: list[Config] = []  # one trained run per session, whichever test module asks first


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory, compile_cache: str) -> Config:
    """A tiny run trained for 8 steps (checkpoints at 4 and 8; metrics file written)."""
    from tvq.train import train

    if not _TRAINED:
        out = tmp_path_factory.mktemp("trained") / "run"
        config = tiny_config(out, optimizer={"max_steps": 8},
                             run={"save_every": 4, "metrics_file": str(out / "metrics.jsonl")})
        train(config)
        _TRAINED.append(config)
    return _TRAINED[0]
