"""Metrics outputs: W&B offline with a resumable run id, no secret in any output."""

import glob
import json
import os
import subprocess
import sys

SCRIPT = """
import sys
from tvq.config import build
from tvq.metrics import MetricsLogger
config = build("cpu", [{"run": {"wandb_mode": "offline", "wandb_run_id": sys.argv[2],
                                "metrics_file": sys.argv[1], "out_dir": sys.argv[3]}}])
logger = MetricsLogger(config, is_leader=True, total_steps=4)
for step in (2, 4):
    logger.log(step, {"loss": 1.0 / step, "bpb": 2.0, "tokens_per_s": 10.0, "lr": 1e-3,
                      "grad_norm": 0.5})
logger.close()
"""


def _log_two_steps(tmp_path, run_id, env):
    return subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "m.jsonl"), run_id,
                           str(tmp_path / "out")], capture_output=True, text=True, env=env,
                          timeout=120)


def test_wandb_offline_run_uses_the_run_id_and_never_prints_the_key(tmp_path):
    secret = "0123456789abcdef0123456789abcdef01234567"
    env = {**os.environ, "WANDB_API_KEY": secret, "WANDB_DIR": str(tmp_path),
           "WANDB_SILENT": "true"}
    done = _log_two_steps(tmp_path, "tvqtest1", env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert secret not in done.stdout + done.stderr
    assert [line.split()[1] for line in done.stdout.splitlines()] == ["step=2", "step=4"]
    runs = glob.glob(str(tmp_path / "wandb" / "offline-run-*-tvqtest1"))
    assert len(runs) == 1 and glob.glob(os.path.join(runs[0], "*.wandb"))
    assert [json.loads(line)["step"] for line in open(tmp_path / "m.jsonl")] == [2, 4]
    for path in glob.glob(str(tmp_path / "wandb" / "**" / "*"), recursive=True):
        if os.path.isfile(path):
            assert secret.encode() not in open(path, "rb").read(), path


def test_without_a_run_id_a_restarted_run_continues_the_same_wandb_run(tmp_path):
    env = {**os.environ, "WANDB_DIR": str(tmp_path), "WANDB_SILENT": "true"}
    env.pop("WANDB_API_KEY", None)
    for _ in range(2):
        done = _log_two_steps(tmp_path, "", env)
        assert done.returncode == 0, done.stderr[-3000:]
    run_id = (tmp_path / "out" / "wandb_run_id").read_text().strip()
    runs = glob.glob(str(tmp_path / "wandb" / "offline-run-*"))
    assert len(runs) == 2 and all(run.endswith("-" + run_id) for run in runs)
