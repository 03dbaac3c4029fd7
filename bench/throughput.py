"""Training throughput of a preset: tokens/s of `tvq train` with 1 and with 2 processes.

Each run is the real command (`python -m tvq train`), the multi-process ones real
`jax.distributed` processes on this machine (gloo collectives on CPU) that find each other through
the rendezvous environment (coordinator on loopback), as the launcher's local backend starts them.
The global batch is the same for every process count. Throughput is read from the leader's
`tvq-metrics` lines: the median `tokens_per_s` of the logged intervals after the first (the first
one includes compilation).

    python -m bench.throughput --device-tag cpu-2core
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import common

NAME = "throughput"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def train_command(preset: str, steps: int, log_every: int, out_dir: str,
                  sets: list[str]) -> list[str]:
    """The `tvq train` command line of one process (no checkpoint until the end)."""
    command = [sys.executable, "-m", "tvq", "train", "--preset", preset, "--steps", str(steps),
               "--set", f"run.out_dir={out_dir}", "--set", f"run.log_every={log_every}",
               "--set", f"run.save_every={steps}", "--set", "run.wandb_mode=disabled"]
    for assignment in sets:
        command += ["--set", assignment]
    return command


def run_processes(processes: int, command: list[str], log_dir: str,
                  timeout_s: float) -> dict[str, Any]:
    """Start `processes` copies of `command` as one run; the leader's metrics and the wall time.

    Each process writes its output to files under log_dir (pipes could fill and stall a run whose
    processes wait for each other).
    """
    env = {**os.environ, "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu")}
    if processes > 1:
        env.update(JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{_free_port()}",
                   TVQ_NUM_PROCESSES=str(processes))
    logs = [Path(log_dir) / f"process{i}.log" for i in range(processes)]
    start = time.perf_counter()
    children = []
    for index, log in enumerate(logs):
        identity = {"TVQ_PROCESS_ID": str(index)} if processes > 1 else {}
        with open(log, "w", encoding="utf-8") as handle:
            children.append(subprocess.Popen(command, cwd=common.REPO_ROOT,
                                             env={**env, **identity}, stdout=handle,
                                             stderr=subprocess.STDOUT))
    deadline = start + timeout_s
    try:
        codes = [child.wait(timeout=max(deadline - time.perf_counter(), 0.1))
                 for child in children]
    except subprocess.TimeoutExpired:
        for child in children:
            child.kill()
            child.wait()
        return {"processes": processes, "status": "timeout", "timeout_s": timeout_s}
    wall_s = time.perf_counter() - start
    outputs = [log.read_text(encoding="utf-8", errors="replace") for log in logs]
    if any(codes):
        failed = next(i for i, code in enumerate(codes) if code)
        return {"processes": processes, "status": "failed", "returncodes": codes,
                "output_tail": outputs[failed].strip().splitlines()[-3:]}
    return {"processes": processes, "status": "ok", "wall_s": round(wall_s, 2),
            **_throughput(outputs[0])}


def _throughput(leader_stdout: str) -> dict[str, Any]:
    """Steady-state tokens/s from the leader's metrics lines (the first interval left out)."""
    from tvq.metrics import parse_line

    logged = [values for values in map(parse_line, leader_stdout.splitlines()) if values]
    steady = [values["tokens_per_s"] for values in logged[1:]]
    if not steady:
        return {"status": "too few logged steps", "logged": len(logged)}
    return {"tokens_per_s": statistics.median(steady), "tokens_per_s_intervals": steady,
            "final_step": logged[-1]["step"], "final_loss": logged[-1]["loss"]}


def plot(rows: list[dict[str, Any]], out_dir: Path, tag: str, preset: str) -> Path:
    """Bars of tokens/s per process count."""
    figure, (axis,) = common.new_figure(f"`tvq train --preset {preset}` throughput ({tag})", 1)
    done = [row for row in rows if row["status"] == "ok"]
    axis.bar([str(row["processes"]) for row in done], [row["tokens_per_s"] for row in done])
    for index, row in enumerate(done):
        axis.annotate(f"{row['tokens_per_s']:.0f}", (index, row["tokens_per_s"]), ha="center",
                      va="bottom")
    axis.set_xlabel("processes (jax.distributed)")
    axis.set_ylabel("tokens / s (all processes)")
    axis.grid(True, axis="y", alpha=0.3)
    return common.save_figure(figure, out_dir, NAME, tag)


def main(argv: list[str] | None = None) -> int:
    """Run `tvq train` with each process count and write throughput-TAG.json and .png."""
    parser = common.base_parser(NAME, __doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu", help="config preset (default: cpu)")
    parser.add_argument("--processes", type=common.size_list, default="1,2",
                        help="process counts to run (default: 1,2)")
    parser.add_argument("--steps", type=int, default=60, help="optimizer steps (default: 60)")
    parser.add_argument("--log-every", type=int, default=10,
                        help="steps per throughput interval (default: 10)")
    parser.add_argument("--timeout-s", type=float, default=600.0,
                        help="give up on one run after this long (default: 600)")
    common.add_set_option(parser, "the preset", "data.global_batch_size=16")
    args = parser.parse_args(argv)
    config = _checked_config(parser.prog, args)
    machine = common.machine_info(args.device_tag)
    rows = []
    for processes in args.processes:
        with tempfile.TemporaryDirectory(prefix="tvq-bench-") as out_dir:
            run_dir = os.path.join(out_dir, "run")
            command = train_command(args.preset, args.steps, args.log_every, run_dir, args.set)
            row = run_processes(processes, command, out_dir, args.timeout_s)
        print(f"{processes} process(es): {row.get('tokens_per_s', row['status'])}", flush=True)
        rows.append(row)
    from tvq.config import describe

    payload = {"benchmark": NAME, "machine": machine, "preset": args.preset,
               "config": describe(config), "steps": args.steps, "rows": rows}
    print(common.write_result(args.out, NAME, args.device_tag, payload))
    print(plot(rows, args.out, args.device_tag, args.preset))
    return 0 if all(row["status"] == "ok" for row in rows) else 1


def _checked_config(prog: str, args: Any) -> Any:
    """The run config every process will build, checked here first (one line, exit 2)."""
    from tvq import config as cfg

    try:
        for option, value in (("--steps", args.steps), ("--log-every", args.log_every)):
            if value < 1:
                raise cfg.ConfigError(f"{option}: got {value}; allowed: an integer >= 1")
        layers = [cfg.parse_set(assignment) for assignment in args.set]
        config = cfg.build(args.preset, [*layers, {"optimizer": {"max_steps": args.steps}}])
        batch = config.data.global_batch_size
        for processes in args.processes:
            if batch % processes:
                raise cfg.ConfigError(f"--processes: got {processes}; allowed: a divisor of "
                                      f"data.global_batch_size ({batch})")
        windows = config.data.sequence_len // config.data.update_len
        if args.steps < 2 * max(args.log_every, windows):
            raise cfg.ConfigError(f"--steps: got {args.steps}; allowed: at least two logged "
                                  f"intervals, >= {2 * max(args.log_every, windows)}")
        return config
    except cfg.ConfigError as error:
        common.fail(prog, str(error))


if __name__ == "__main__":
    sys.exit(main())
