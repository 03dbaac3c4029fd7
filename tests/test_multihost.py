"""Multi-host training for real: `tvq train` processes joined over loopback on this CPU.

Every run trains the same tiny model on the same global batch of 4 sequences for 4 optimizer
steps (2 calls of 2 update windows), so their per-step losses must agree whatever the number of
processes, devices and fsdp shards, and across a checkpoint written by one and resumed by another.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tvq import distributed
from tvq.metrics import PREFIX

pytestmark = pytest.mark.slow
TINY = ("--steps", "4", "--batch-size", "4", "--sequence-len", "64", "--block-len", "16",
        "--mem-len", "16", "--codebook-size", "16", "--set", "data.update_len=32",
        "--set", "model.d_model=32", "--set", "model.d_k=16", "--set", "model.d_v=64",
        "--set", "model.n_layer=1", "--set", "optimizer.warmup_steps=1",
        "--set", "run.log_every=1", "--set", "run.save_every=2")
CONTRACT = ("TVQ_", "JAX_COORDINATOR", "JOB_COMPLETION_INDEX", "XLA_FLAGS")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    """`python -m tvq <args>` with this environment minus the contract's variables, plus `env`."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(CONTRACT)}
    return subprocess.Popen([sys.executable, "-m", "tvq", *args],
                            env={**clean, "JAX_PLATFORMS": "cpu", **env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(processes: list[subprocess.Popen]) -> list[tuple[int, str, str]]:
    # The timeout guards against a hang; it is not what the tests check.
    outputs = [p.communicate(timeout=300) for p in processes]
    return [(p.returncode, out, err) for p, (out, err) in zip(processes, outputs)]


def identity(index: int, count: int, address: str) -> dict[str, str]:
    """Process `index` of `count`: even ones by TVQ_PROCESS_ID, odd ones as the only pod of
    JobSet job `index` (job index x pods per job + completion index)."""
    if index % 2:
        return {"TVQ_NUM_PROCESSES": str(count), "JOB_COMPLETION_INDEX": "0",
                "TVQ_JOB_INDEX": str(index), "TVQ_PODS_PER_JOB": "1",
                "JAX_COORDINATOR_ADDRESS": address}
    return {"TVQ_NUM_PROCESSES": str(count), "TVQ_PROCESS_ID": str(index),
            "JAX_COORDINATOR_ADDRESS": address}


class Run:
    """One finished `tvq train` run: every process's output and the leader's metrics file."""

    def __init__(self, out_dir: Path, processes: int = 1, devices: int = 1, fsdp: int = 1,
                 in_dir: Path | None = None) -> None:
        self.out_dir, self.metrics_file = out_dir, out_dir.with_suffix(".jsonl")
        args = ["train", *TINY, "--set", f"run.mesh_fsdp={fsdp}", "-o", str(out_dir),
                "--metrics-file", str(self.metrics_file)] + (["-i", str(in_dir)] if in_dir else [])
        env = {"XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
               # a compilation cache as users configure it: multi-process CPU runs must not use
               # it (tvq.distributed turns it off; loaded by several processes it gave wrong losses)
               "JAX_COMPILATION_CACHE_DIR": str(out_dir.parent / "xla-cache"),
               "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
        address = f"127.0.0.1:{free_port()}"
        self.results = finish([
            start(args, {**env, **(identity(i, processes, address) if processes > 1 else {})})
            for i in range(processes)])
        for code, _, err in self.results:
            assert code == 0, err

    def losses(self) -> dict[int, float]:
        """step -> loss, from the metrics file (only the leader writes it)."""
        lines = self.metrics_file.read_text().splitlines()
        steps = [json.loads(line) for line in lines]
        assert len({s["step"] for s in steps}) == len(steps), "a step was logged twice"
        return {s["step"]: s["loss"] for s in steps}


def checkpoint_at(run: Run, step: int, destination: Path) -> Path:
    """A copy of `run`'s checkpoint directory holding only the checkpoint of `step`."""
    steps = [p.name for p in run.out_dir.iterdir() if p.name.isdigit()]
    assert str(step) in steps, steps
    return Path(shutil.copytree(run.out_dir, destination,
                                ignore=lambda d, names: [n for n in names if d == str(run.out_dir)
                                                         and n.isdigit() and n != str(step)]))


def same_losses(actual: dict[int, float], expected: dict[int, float]) -> None:
    assert sorted(actual) == sorted(expected)
    for step, loss in expected.items():
        assert actual[step] == pytest.approx(loss, rel=1e-5), f"step {step}"


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def one_process(runs: Path) -> Run:
    """The reference: 1 process, 4 host devices, data-parallel only."""
    return Run(runs / "one", devices=4)


@pytest.fixture(scope="module")
def two_processes(runs: Path) -> Run:
    return Run(runs / "two", processes=2)


def test_two_processes_give_the_losses_of_one(one_process: Run, two_processes: Run):
    assert sorted(one_process.losses()) == [2, 4]
    same_losses(two_processes.losses(), one_process.losses())
    (_, leader_out, _), (_, other_out, other_err) = two_processes.results
    assert sum(line.startswith(PREFIX) for line in leader_out.splitlines()) == 2
    assert PREFIX not in other_out
    assert "process 1 of 2 (cpu) joined: 2 processes, 2 devices (1 local)" in other_err
    assert all("the JAX compilation cache is off" in err for _, _, err in two_processes.results)


def test_fsdp_2_gives_the_losses_of_fsdp_1(one_process: Run, runs: Path):
    same_losses(Run(runs / "fsdp", devices=4, fsdp=2).losses(), one_process.losses())


def test_checkpoint_of_two_processes_resumes_in_one(one_process: Run, two_processes: Run,
                                                    runs: Path):
    resumed = Run(runs / "two_then_one", in_dir=checkpoint_at(two_processes, 2, runs / "two@2"))
    assert "restored step 2" in resumed.results[0][1]
    same_losses(resumed.losses(), {4: one_process.losses()[4]})


def test_checkpoint_of_one_process_resumes_in_two(one_process: Run, runs: Path):
    resumed = Run(runs / "one_then_two", processes=2,
                  in_dir=checkpoint_at(one_process, 2, runs / "one@2"))
    assert all("restored step 2" in out for _, out, _ in resumed.results)
    same_losses(resumed.losses(), {4: one_process.losses()[4]})


def test_inconsistent_variables_exit_2_with_one_line_before_writing(tmp_path: Path):
    out_dir = tmp_path / "never"
    [(code, out, err)] = finish([start(
        ["train", *TINY, "-o", str(out_dir)],
        {"TVQ_NUM_PROCESSES": "2", "TVQ_PROCESS_ID": "2", "JAX_COORDINATOR_ADDRESS": "h:1"})])
    assert code == 2
    assert err == "tvq: error: TVQ_PROCESS_ID: got 2; allowed: 0 to 1 (TVQ_NUM_PROCESSES is 2)\n"
    assert not out_dir.exists()


def test_a_rendezvous_that_never_completes_ends_every_process(tmp_path: Path):
    """Process 1 whose coordinator never comes up, and a coordinator whose peer never comes."""
    alone = {1: f"127.0.0.1:{free_port()}", 0: f"127.0.0.1:{free_port()}"}
    waited_for = {1: f"the coordinator at {alone[1]} (process 0) and 1 other process",
                  0: f"1 other process to join the coordinator it hosts on {alone[0]}"}
    processes = [start(["train", *TINY, "-o", str(tmp_path / str(index))],
                       {"TVQ_NUM_PROCESSES": "2", "TVQ_PROCESS_ID": str(index),
                        "JAX_COORDINATOR_ADDRESS": address, "TVQ_INIT_TIMEOUT_S": "3"})
                 for index, address in alone.items()]
    for index, (code, out, err) in zip(alone, finish(processes)):
        assert code == distributed.TIMEOUT_EXIT_CODE, err
        assert PREFIX not in out
        assert [line for line in err.splitlines() if "gave up" in line] == [
            f"tvq: process {index} of 2 (cpu) gave up after 3 s waiting for {waited_for[index]}"
            "; check that every process started and the coordinator address resolves and is "
            "reachable (wait longer with TVQ_INIT_TIMEOUT_S or run.init_timeout_s)"]
