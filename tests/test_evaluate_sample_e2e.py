"""`evaluate` and `sample` end to end: a real orbax checkpoint, the real data, the written files,
and `tvq val` over two jax.distributed processes agreeing with one."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from tvq import config as cfg
from tvq.checkpoint import CheckpointWriter
from tvq.data import ByteVocab, make_eval_iterator, make_train_iterator
from tvq.evaluate import EVAL_PREFIX, evaluate, evaluate_batches
from tvq.model import Transformer, codebook_mask
from tvq.optim import make_optimizer
from tvq.sample import sample
from tvq.train import init_params

STEP = 6
TINY = {"model.d_model": 32, "model.d_k": 16, "model.d_v": 32, "model.n_layer": 1,
        "model.n_code": 8, "model.block_len": 8, "model.mem_len": 8, "data.sequence_len": 32,
        "data.update_len": 16, "data.global_batch_size": 2}


def tiny(**run) -> cfg.Config:
    """The cpu preset (synthetic data) shrunk to TINY."""
    layers = [cfg.parse_set(f"{key}={value}") for key, value in TINY.items()]
    return cfg.replace(cfg.build(layers=layers), run=run)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """(run dir holding one checkpoint at STEP written by the trainer's writer, its params)."""
    out_dir = str(tmp_path_factory.mktemp("run"))
    config = tiny(out_dir=out_dir)
    params = jax.jit(lambda: init_params(config, Transformer(config.model),
                                         jax.random.PRNGKey(0)))()
    tx = make_optimizer(config.optimizer, codebook_mask(params))
    writer = CheckpointWriter(config.run)
    writer.save(STEP, {"params": params, "opt_state": tx.init(params),
                       "rng": jax.random.PRNGKey(1), "step": jnp.int32(STEP)},
                make_train_iterator(config))
    writer.close()
    return out_dir, params


def test_evaluate_restores_the_checkpoint_and_reports(checkpoint, tmp_path, capsys):
    out_dir, params = checkpoint
    metrics = tmp_path / "metrics.jsonl"
    config = tiny(out_dir=out_dir, eval_steps=2, metrics_file=str(metrics))
    summary = evaluate(config, "validation")

    batches = list(make_eval_iterator(config, "validation"))
    assert len(batches) == 2
    expected = evaluate_batches(config, params, batches, ByteVocab())
    assert summary["step"] == STEP and summary["split"] == "validation"
    assert summary["tokens"] == expected.tokens == sum(int((b != 0).sum()) for b in batches)
    assert summary["loss"] == pytest.approx(expected.nats / expected.tokens, rel=1e-6)
    assert [json.loads(line) for line in metrics.read_text().splitlines()] == [summary]
    assert capsys.readouterr().out.count(f"{EVAL_PREFIX} split=validation ") == 1


def test_evaluate_without_a_checkpoint_fails_with_one_line_and_writes_nothing(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    config = tiny(out_dir=str(tmp_path / "empty"), metrics_file=str(metrics))
    with pytest.raises(cfg.ConfigError, match="^run.out_dir / run.in_dir: no checkpoint"):
        evaluate(config, "test")
    assert not metrics.exists()


def test_sample_writes_seeded_continuations_of_the_prompt(checkpoint):
    out_dir, _ = checkpoint
    config = tiny(out_dir=out_dir, prompt="Ab", sample_len=14, sample_batch=2, seed=3)
    paths = sample(config)
    texts = [open(path, encoding="utf-8").read() for path in paths]
    assert len(paths) == 2
    assert all(os.path.dirname(path) == os.path.join(out_dir, "samples") for path in paths)
    assert all(text.startswith("Ab") for text in texts)
    assert texts[0] != texts[1]  # each row of the batch draws its own tokens

    assert [open(path, encoding="utf-8").read() for path in sample(config)] == texts


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tvq_val(out_dir: str, processes: int) -> list[str]:
    """The `tvq-eval` lines of `tvq val` run as `processes` jax.distributed processes."""
    args = [sys.executable, "-m", "tvq", "val", "-o", out_dir, "--set", "run.eval_steps=2",
            *[arg for key, value in TINY.items() for arg in ("--set", f"{key}={value}")]]
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("TVQ_", "JAX_COORDINATOR", "XLA_FLAGS"))}
    rendezvous = {"TVQ_NUM_PROCESSES": str(processes),
                  "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{free_port()}"}
    runs = [subprocess.Popen(args, env={**clean, "JAX_PLATFORMS": "cpu",
                                        **({**rendezvous, "TVQ_PROCESS_ID": str(index)}
                                           if processes > 1 else {})},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for index in range(processes)]
    outputs = [run.communicate(timeout=300) for run in runs]  # guards a hang; not timed
    for run, (_, err) in zip(runs, outputs):
        assert run.returncode == 0, err
    return [line for out, _ in outputs for line in out.splitlines()
            if line.startswith(EVAL_PREFIX)]


@pytest.mark.slow
def test_val_over_two_processes_equals_one_process(checkpoint):
    out_dir, _ = checkpoint
    single, double = tvq_val(out_dir, 1), tvq_val(out_dir, 2)
    assert len(single) == 1 and single == double  # printed by process 0 only
