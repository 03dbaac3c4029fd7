"""The local backend for real: rendered pods run as `tvq` processes under a detached supervisor."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from launcher.cli import main
from launcher.local import alive

# A tiny model on the embedded synthetic data: each process starts, compiles and trains in seconds.
TINY_TVQ = ["--set", "model.d_model=32", "--set", "model.d_k=16", "--set", "model.d_v=32",
            "--set", "model.n_layer=1", "--set", "model.n_code=8", "--set", "model.block_len=16",
            "--set", "model.mem_len=16", "--set", "data.sequence_len=64",
            "--set", "data.update_len=32", "--set", "data.global_batch_size=4",
            "--set", "run.log_every=2", "--set", "run.save_every=2",
            "--set", "optimizer.warmup_steps=1"]
LOCAL = ["--backend", "local"]


@pytest.fixture()
def state(tmp_path, monkeypatch):
    root = tmp_path / "state"
    monkeypatch.setenv("TVQ_LAUNCHER_STATE", str(root))
    return root


def status_file(root: Path, name: str) -> dict:
    path = root / name / "status.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def wait_for(predicate, timeout_s: float, what: str) -> None:
    end = time.time() + timeout_s
    while not predicate():
        assert time.time() < end, f"timed out waiting for {what}"
        time.sleep(0.2)


def group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.slow
def test_two_host_run_survives_a_killed_worker_and_completes_from_its_checkpoint(
        state, tmp_path, capsys):
    out = tmp_path / "ckpt"
    assert main(["submit", *LOCAL, "--name", "e2e", "--set", "hosts=2", "--set", "maxRestarts=2",
                 "--", "--steps", "16", "-o", str(out), *TINY_TVQ]) == 0
    wait_for(lambda: (out / "2").is_dir(), 240, "the first checkpoint")
    victim = next(w for w in status_file(state, "e2e")["workers"] if w["worker"] == 1)
    os.kill(victim["pid"], signal.SIGKILL)
    wait_for(lambda: status_file(state, "e2e")["state"] not in ("Pending", "Running"), 240,
             "the run to end")

    capsys.readouterr()
    assert main(["status", *LOCAL, "e2e"]) == 0
    shown = capsys.readouterr().out
    assert "run e2e: Succeeded" in shown and "restarts 1/2" in shown
    assert "leader: step=16 " in shown
    assert main(["logs", *LOCAL, "e2e", "--worker", "0"]) == 0
    leader = capsys.readouterr().out.splitlines()
    restored = [line for line in leader
                if line.startswith("[worker 0 restart 1] tvq: restored step")]
    assert restored and int(restored[0].split("restored step ")[1].split()[0]) >= 2
    assert any(line.startswith("[worker 0] tvq-metrics step=2 ") for line in leader)
    assert not any(line.startswith("[worker 1") for line in leader)
    assert main(["list", *LOCAL]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("e2e "))
    assert row.split()[2:] == ["Succeeded", "16"]


def test_a_worker_that_always_fails_uses_up_max_restarts_and_follow_exits_3(state, capsys):
    # tvq rejects d_model=0 before any compute: a real, fast, deterministic worker failure.
    code = main(["submit", *LOCAL, "--name", "bad", "--set", "hosts=2", "--set", "maxRestarts=1",
                 "--follow", "--timeout", "120s", "--", "--set", "model.d_model=0"])
    captured = capsys.readouterr()
    assert code == 3
    assert "run bad: Failed" in captured.err and "restarts 1/1" in captured.err
    for tag in ("[worker 0]", "[worker 1]", "[worker 0 restart 1]", "[worker 1 restart 1]"):
        assert f"{tag} tvq: error: model.d_model: got 0" in captured.out
    assert sorted(p.name for p in (state / "bad" / "logs").iterdir()) == ["attempt-0",
                                                                         "attempt-1"]


def test_kill_leaves_no_process_behind_and_a_live_name_is_not_replaced(state, tmp_path, capsys):
    argv = ["submit", *LOCAL, "--name", "long", "--set", "hosts=2", "--",
            "--steps", "100000", "-o", str(tmp_path / "ckpt"), *TINY_TVQ]
    assert main(argv) == 0
    wait_for(lambda: len(status_file(state, "long").get("workers", [])) == 2, 60, "2 workers")
    workers = [w["pid"] for w in status_file(state, "long")["workers"]]
    supervisor = int((state / "long" / "supervisor.pid").read_text())

    assert main(argv) == 2
    assert "still running" in capsys.readouterr().err
    assert all(alive(pid) for pid in workers)

    assert main(["kill", *LOCAL, "long", "--yes"]) == 0
    assert not alive(supervisor) and not any(alive(pid) for pid in workers)
    assert all(group_gone(pid) for pid in [supervisor, *workers])
    assert status_file(state, "long")["state"] == "Killed"
    assert main(["status", *LOCAL, "long"]) == 0
    assert "run long: Killed" in capsys.readouterr().out
