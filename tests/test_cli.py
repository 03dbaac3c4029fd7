"""The `tvq` command line: flag mapping, config layering, and the bad-input table."""

import json
import os
import subprocess
import sys

import pytest

from tvq.cli import build_config, main, make_parser
from tvq.metrics import format_line, parse_line

BAD_INPUTS = [  # (arguments, text the one error line must contain)
    (["train", "--preset", "gpt5"], "--preset: got 'gpt5'; allowed: cpu, enwik8"),
    (["train", "--dataset", "wiki"], "data.dataset: got 'wiki'; allowed: synthetic, text"),
    (["train", "-t", "300"], "data.update_len: got 128; allowed: a divisor of data.sequence_len"),
    (["train", "-l", "48"], "model.block_len: got 48; allowed: a divisor of data.update_len"),
    (["train", "-a", "2"], "model.agg_cache: got '2'; allowed: 0, 1"),
    (["train", "-p", "float16"], "model.dtype: got 'float16'; allowed: float32, bfloat16"),
    (["train", "--set", "model.d_model"], "--set: got 'model.d_model'; expected section.field"),
    (["train", "--set", "model.width=3"], "model.width: unknown field"),
    (["train", "--steps", "ten"], "optimizer.max_steps: got 'ten'; allowed: an integer"),
    (["train", "--dataset", "text"], "data.data_dir: required for dataset text"),
    (["train", "--preset", "pg19", "-d", "/data"], "data.vocab_path: required for dataset pg19"),
    (["val", "--config", "/no/such.yaml"], "--config: no such file '/no/such.yaml'"),
    (["train", "--set", "run.wandb_mode=online"], "run.wandb_mode: online needs WANDB_API_KEY"),
    (["fly"], "invalid choice: 'fly'"),
    (["train", "--bogus"], "unrecognized arguments: --bogus"),
]


def test_bad_input_is_one_line_exit_2_before_jax_and_writes_nothing(tmp_path):
    """Every case in one fresh interpreter, so we can see that JAX was never even imported."""
    out = tmp_path / "out"
    script = (
        "import contextlib, io, json, sys\n"
        "from tvq.cli import main\n"
        "results = []\n"
        f"for args in {[case for case, _ in BAD_INPUTS]!r}:\n"
        "    err = io.StringIO()\n"
        "    with contextlib.redirect_stderr(err):\n"
        "        try:\n"
        f"            code = main(args + ['-o', {str(out)!r}, '--metrics-file', "
        f"{str(out / 'm.jsonl')!r}])\n"
        "        except SystemExit as exit:\n"
        "            code = exit.code\n"
        "    results.append([code, err.getvalue()])\n"
        "print(json.dumps({'results': results, 'jax': 'jax' in sys.modules}))\n")
    env = {key: value for key, value in os.environ.items() if key != "WANDB_API_KEY"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, check=True, timeout=60)
    report = json.loads(done.stdout)
    for (args, expected), (code, stderr) in zip(BAD_INPUTS, report["results"]):
        assert code == 2, (args, stderr)
        assert stderr.count("\n") == 1 and stderr.startswith("tvq: error: "), (args, stderr)
        assert expected in stderr, (args, stderr)
    assert report["jax"] is False
    assert not out.exists()


def test_every_original_flag_maps_to_its_config_field():
    args = make_parser().parse_args(
        ["train", "-r", "7", "-p", "bfloat16", "-t", "512", "-l", "64", "-m", "128", "-s", "32",
         "-a", "0", "-g", "0", "-e", "5", "-i", "in", "-o", "out", "-d", "/data", "-v", "v.model",
         "-w", "run42", "--dataset", "text", "--steps", "40", "--batch-size", "4",
         "--attention", "full", "--metrics-file", "m.jsonl"])
    c = build_config(args)
    assert (c.run.seed, c.model.dtype, c.data.sequence_len, c.model.block_len) == (
        7, "bfloat16", 512, 64)
    assert (c.model.mem_len, c.model.n_code, c.model.agg_cache, c.model.grad_thru_cache) == (
        128, 32, False, False)
    assert (c.optimizer.extra_steps, c.run.in_dir, c.run.out_dir, c.data.data_dir) == (
        5, "in", "out", "/data")
    assert (c.data.vocab_path, c.run.wandb_run_id, c.data.dataset, c.optimizer.max_steps) == (
        "v.model", "run42", "text", 40)
    assert (c.data.global_batch_size, c.model.attention, c.run.metrics_file) == (
        4, "full", "m.jsonl")


def test_layers_apply_preset_then_file_then_flags_then_set(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("model: {n_code: 16, d_model: 64}\n"
                    "optimizer: {max_steps: 9, warmup_steps: 3}\n")
    args = make_parser().parse_args(["train", "--preset", "enwik8", "-d", "/d", "--config",
                                     str(path), "-s", "24", "--set", "model.n_code=40"])
    c = build_config(args)
    assert c.model.d_k == 128  # from the preset
    assert c.model.d_model == 64 and c.optimizer.max_steps == 9  # from the file
    assert c.model.n_code == 40  # --set beats the flag, which beat the file


def test_metrics_line_has_the_launcher_contract_format():
    line = format_line(12, {"loss": 2.5, "bpb": 3.6, "tokens_per_s": 1000.0, "lr": 1e-3,
                            "grad_norm": 0.5, "l_commit": 0.25})
    assert line == ("tvq-metrics step=12 loss=2.5 bpb=3.6 tokens_per_s=1000 lr=0.001 "
                    "grad_norm=0.5 l_commit=0.25")
    assert parse_line(line)["step"] == 12 and parse_line(line)["l_commit"] == 0.25
    assert parse_line("tvq: something else") is None
    with pytest.raises(KeyError, match="grad_norm"):
        format_line(1, {"loss": 1.0, "bpb": 1.0, "tokens_per_s": 1.0, "lr": 1.0})


def test_wandb_environment_is_a_layer_below_the_flags(monkeypatch):
    """The chart and the launcher pass W&B settings as env vars; -w still wins over them."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_PROJECT", "lm")
    monkeypatch.setenv("WANDB_RUN_ID", "from-env")
    run = build_config(make_parser().parse_args(["train"])).run
    assert (run.wandb_mode, run.wandb_project, run.wandb_run_id) == ("offline", "lm", "from-env")
    assert build_config(make_parser().parse_args(["train", "-w", "flag"])).run.wandb_run_id == "flag"


def test_steps_caps_the_warmup_so_a_short_smoke_run_is_valid():
    config = build_config(make_parser().parse_args(["train", "--steps", "3"]))
    assert (config.optimizer.max_steps, config.optimizer.warmup_steps) == (3, 3)
    config = build_config(make_parser().parse_args(["train", "--steps", "150"]))
    assert config.optimizer.warmup_steps == 10  # the preset's, below the cap


def test_the_saved_run_config_sits_above_the_preset_and_below_the_flags(tmp_path):
    """`tvq val -o DIR` evaluates the model as trained (config.yaml in DIR); flags still win."""
    from tvq import config as cfg
    from tvq import saved_config

    trained = cfg.build("cpu", [{"model": {"agg_cache": False, "block_len": 16},
                                 "run": {"out_dir": str(tmp_path)}}])
    saved_config.save(trained)
    config = build_config(make_parser().parse_args(["val", "-o", str(tmp_path)]))
    assert (config.model.agg_cache, config.model.block_len) == (False, 16)
    config = build_config(make_parser().parse_args(["val", "-o", str(tmp_path), "-a", "1"]))
    assert config.model.agg_cache is True
    fresh = build_config(make_parser().parse_args(["val", "-o", str(tmp_path / "other")]))
    assert fresh.model.agg_cache is True and fresh.model.block_len == 32


def test_a_config_saved_in_the_input_dir_never_redirects_the_output(tmp_path):
    from tvq import config as cfg
    from tvq import saved_config

    source = tmp_path / "pretrained"
    saved_config.save(cfg.build("cpu", [{"model": {"n_code": 16},
                                         "run": {"out_dir": str(source)}}]))
    config = build_config(make_parser().parse_args(["train", "-i", str(source)]))
    assert config.model.n_code == 16
    assert (config.run.out_dir, config.run.in_dir) == ("runs/default", str(source))
