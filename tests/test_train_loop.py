"""The training loop end to end on a tiny model: metrics, checkpoints, exact resume, NaN stop."""

import json
import math
import shutil
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest
from trainkit import (TINY_FLAGS, compile_cache, compile_cache_env,  # noqa: F401 (fixtures)
                      tiny_config, trained_run)

from tvq import checkpoint
from tvq.cli import PREEMPTED_EXIT_CODE
from tvq.metrics import parse_line
from tvq.train import NonFiniteLoss, init_params, train


def _params(config):
    from tvq.model import Transformer

    model = Transformer(config.model)
    abstract = jax.eval_shape(lambda: init_params(config, model, jax.random.PRNGKey(0)))
    return checkpoint.restore_params(config, abstract)


def test_training_logs_falling_loss_to_file_and_keeps_checkpoints(trained_run):
    lines = open(trained_run.run.metrics_file).read().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["step"] for r in records] == [2, 4, 6, 8]  # log_every=2, one call = 2 windows
    for record in records:
        assert {"loss", "bpb", "tokens_per_s", "lr", "grad_norm"} <= set(record)
        assert record["bpb"] == pytest.approx(record["loss"] / math.log(2))
    assert records[-1]["loss"] < records[0]["loss"]
    assert checkpoint.latest_step(trained_run.run.out_dir) == 8
    params, step = _params(trained_run)
    assert step == 8 and all(np.all(np.isfinite(x)) for x in jax.tree.leaves(params))


def test_stdout_has_one_metrics_line_per_logging_step(tmp_path, compile_cache, capsys):
    config = tiny_config(tmp_path / "run", optimizer={"max_steps": 8}, run={"log_every": 4})
    train(config)
    lines = [parse_line(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["step"] for line in lines if line] == [4, 8]


def test_resume_after_sigterm_gives_the_same_parameters_as_a_straight_run(tmp_path,
                                                                          compile_cache):
    steps = ["--steps", "8", "--set", "run.save_every=100"]
    resumed, straight = tmp_path / "resumed", tmp_path / "straight"
    # Leg 1: SIGTERM as soon as the process has started; it saves at the next sequence
    # boundary and exits 143, wherever that boundary falls (in practice after the first).
    leg1 = subprocess.Popen([sys.executable, "-m", "tvq", "train", *TINY_FLAGS, *steps,
                             "-o", str(resumed)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=compile_cache_env(compile_cache))
    for line in leg1.stdout:
        if line.startswith("tvq: config"):
            leg1.send_signal(signal.SIGTERM)
            break
    out, err = leg1.communicate(timeout=240)
    assert leg1.returncode == PREEMPTED_EXIT_CODE, err
    stopped_at = checkpoint.latest_step(str(resumed))
    assert stopped_at is not None and 0 < stopped_at < 8
    assert f"stopped by SIGTERM at step {stopped_at} of 8" in err

    config = tiny_config(resumed, optimizer={"max_steps": 8}, run={"save_every": 100})
    train(config)  # leg 2 restores from resumed/ and finishes
    train(tiny_config(straight, optimizer={"max_steps": 8}, run={"save_every": 100}))
    (params_a, step_a), (params_b, step_b) = _params(config), _params(
        tiny_config(straight, optimizer={"max_steps": 8}))
    assert step_a == step_b == 8
    for a, b in zip(jax.tree.leaves(params_a), jax.tree.leaves(params_b)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-6)


def test_non_finite_loss_stops_without_saving(trained_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(trained_run.run.out_dir, out)
    config = tiny_config(out, optimizer={"max_steps": 16, "lr_max": 1e30},
                         run={"save_every": 2})
    with pytest.raises(NonFiniteLoss, match="non-finite loss .* stopped without saving"):
        train(config)
    assert checkpoint.latest_step(str(out)) == 8
