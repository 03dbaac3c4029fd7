"""The local backend's supervisor: runs one local run's workers with JobSet semantics.

`python -m launcher.supervisor RUN_DIR` starts every planned pod as a `tvq` process in its own
process group, with the coordinator on 127.0.0.1 and a free port. When one worker fails, all are
stopped and started again as a new restart attempt, up to maxRestarts; the run succeeds when all
workers of an attempt exit 0. SIGTERM stops every worker and records the run as Killed.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from launcher.local import POLL_S, read_json, write_json

STOP_GRACE_S = 5.0


class Stopped(Exception):
    """SIGTERM arrived: stop every worker and record the run as Killed."""


def free_port() -> int:
    """A TCP port on loopback that is free right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Supervisor:
    """Starts, watches and restarts one run's workers, recording everything in status.json."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.plan = read_json(run_dir / "run.json")
        self.status = read_json(run_dir / "status.json")
        self.procs: list[tuple[dict[str, Any], subprocess.Popen]] = []
        self.procs_attempt = 0  # the restart attempt self.procs belong to

    def _save(self, **changes: Any) -> None:
        self.status.update(changes)
        self.status["workers"] = [
            {"worker": pod["worker"], "attempt": self.procs_attempt, "pid": proc.pid,
             "exit_code": proc.returncode,
             "phase": "Running" if proc.returncode is None else
             "Succeeded" if proc.returncode == 0 else "Failed"}
            for pod, proc in self.procs]
        write_json(self.run_dir / "status.json", self.status)

    def _start(self, attempt: int) -> None:
        port = free_port()
        logs = self.run_dir / "logs" / f"attempt-{attempt}"
        logs.mkdir(parents=True, exist_ok=True)
        self.procs, self.procs_attempt = [], attempt
        for pod in self.plan["pods"]:
            env = {**os.environ, **pod["env"],
                   "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}"}
            # SIGTERM waits until the new worker is recorded, so a kill never misses it.
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
            with open(logs / f"worker-{pod['worker']}.log", "wb") as log:
                proc = subprocess.Popen([self.plan["tvq"], *pod["args"]], env=env,
                                        stdin=subprocess.DEVNULL, stdout=log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
            self.procs.append((pod, proc))
            self._save()
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})

    def _stop_all(self) -> None:
        """SIGTERM every worker's process group, then SIGKILL what is left after a grace."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for _, proc in self.procs:
                if proc.poll() is None:
                    try:
                        os.killpg(proc.pid, sig)
                    except ProcessLookupError:
                        pass
            end = time.time() + STOP_GRACE_S
            while any(p.poll() is None for _, p in self.procs) and time.time() < end:
                time.sleep(POLL_S)
        for _, proc in self.procs:  # anything the workers started in their groups goes too
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def _wait(self) -> bool:
        """Wait for the attempt's end: True when all workers exited 0, False at the first failure."""
        while True:
            codes = [proc.poll() for _, proc in self.procs]
            if any(code not in (None, 0) for code in codes):
                return False
            if all(code == 0 for code in codes):
                return True
            time.sleep(POLL_S)

    def run(self) -> str:
        """Run attempts until success, or failure after maxRestarts restarts; the final state."""
        attempt = 0
        while True:
            self._start(attempt)
            self._save(state="Running", attempt=attempt)
            if self._wait():
                self._save(state="Succeeded", finished=time.time())
                return "Succeeded"
            self._save()
            self._stop_all()
            if self.status["restarts"] >= self.plan["max_restarts"]:
                self._save(state="Failed", finished=time.time())
                return "Failed"
            attempt += 1
            self._save(restarts=self.status["restarts"] + 1, attempt=attempt)

    def stop(self) -> None:
        """Stop every worker and record the run as Killed."""
        self._stop_all()
        self._save(state="Killed", finished=time.time())


def main(argv: list[str] | None = None) -> int:
    """Supervise the run in RUN_DIR until it ends or SIGTERM arrives."""
    run_dir = Path((argv or sys.argv[1:])[0])

    def on_term(signum: int, frame: Any) -> None:
        raise Stopped

    signal.signal(signal.SIGTERM, on_term)
    supervisor = Supervisor(run_dir)
    try:
        state = supervisor.run()
    except Stopped:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        supervisor.stop()
        return 0
    print(f"run {run_dir.name}: {state}", flush=True)
    return 0 if state == "Succeeded" else 1


if __name__ == "__main__":
    sys.exit(main())
