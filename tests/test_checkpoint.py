"""Checkpoints: where parameters are restored from, and a kill during a save."""

import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from trainkit import (TINY_FLAGS, compile_cache, compile_cache_env,  # noqa: F401 (fixtures)
                      tiny_config, trained_run)

from tvq import checkpoint
from tvq.config import ConfigError
from tvq.model import Transformer
from tvq.train import init_params, train


def _abstract_params(config):
    model = Transformer(config.model)
    return jax.eval_shape(lambda: init_params(config, model, jax.random.PRNGKey(0)))


def test_restore_params_prefers_out_dir_then_in_dir(trained_run, tmp_path):
    abstract = _abstract_params(trained_run)
    from_out, step = checkpoint.restore_params(trained_run, abstract)
    assert step == 8
    empty_out = tiny_config(tmp_path / "fresh", run={"in_dir": trained_run.run.out_dir})
    from_in, step_in = checkpoint.restore_params(empty_out, abstract)
    assert step_in == 8
    for a, b in zip(jax.tree.leaves(from_out), jax.tree.leaves(from_in)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert jax.tree.structure(from_out) == jax.tree.structure(abstract)


def test_restore_params_without_any_checkpoint_is_a_one_line_config_error(tmp_path):
    config = tiny_config(tmp_path / "none", run={"in_dir": str(tmp_path / "also_none")})
    with pytest.raises(ConfigError, match="no checkpoint in") as error:
        checkpoint.restore_params(config, _abstract_params(config))
    assert "\n" not in str(error.value)
    assert not (tmp_path / "none").exists()


def test_checkpoint_of_another_optimizer_is_a_one_line_config_error(trained_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(trained_run.run.out_dir, out)
    config = tiny_config(out, optimizer={"max_steps": 8, "name": "adafactor"})
    with pytest.raises(ConfigError, match="does not fit this config") as error:
        train(config)
    assert "\n" not in str(error.value)
    assert checkpoint.latest_step(str(out)) == 8


def _is_mid_save(directory):
    return os.path.isdir(directory) and any("tmp" in name for name in os.listdir(directory))


def test_kill_during_a_save_leaves_the_previous_checkpoint_usable(tmp_path, compile_cache):
    out = tmp_path / "run"
    # extra steps keep the compiled step identical to the other tiny runs (schedule unchanged)
    args = [sys.executable, "-m", "tvq", "train", *TINY_FLAGS, "--steps", "8", "-e", "2000",
            "--set", "run.save_every=2", "--set", "run.keep=2", "-o", str(out)]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env=compile_cache_env(compile_cache))
    deadline = time.monotonic() + 240
    while process.poll() is None and time.monotonic() < deadline:
        if _is_mid_save(out):
            if (checkpoint.latest_step(str(out)) or 0) >= 6:  # with a few complete ones before
                process.send_signal(signal.SIGKILL)
                break
            while _is_mid_save(out) and process.poll() is None:
                time.sleep(0.001)
        time.sleep(0.001)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, "the run ended before a save was caught"
    assert _is_mid_save(out)  # the unfinished save is still there, never renamed
    latest = checkpoint.latest_step(str(out))
    assert latest is not None and latest >= 6
    resumed = tiny_config(out, optimizer={"max_steps": 8}, run={"save_every": 1000})
    params, step = checkpoint.restore_params(resumed, _abstract_params(resumed))
    assert step == latest
    assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(params))
    train(tiny_config(out, optimizer={"max_steps": 8, "extra_steps": latest + 2 - 8},
                      run={"save_every": 1000}))
    assert checkpoint.latest_step(str(out)) == latest + 2
