"""The local backend: a run's rendered pods as local `tvq` processes, with JobSet semantics.

Each run lives in a state directory `<state>/<name>/` ($TVQ_LAUNCHER_STATE, default
~/.local/state/tvq-launcher): `run.json` (what to start), `status.json` (written by the
supervisor), `logs/attempt-<k>/worker-<w>.log` and `supervisor.log`. A detached supervisor
process (`python -m launcher.supervisor`) starts the workers, restarts them all when one fails
(up to maxRestarts) and records the outcome, so every command works from any shell.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Mapping, TextIO

from launcher.errors import LauncherError, PreflightError
from launcher.logs import PrefixedWriter, last_metrics, prefix
from launcher.render import CONTAINER, JOB_INDEX_KEY
from launcher.status import PodStatus, RunStatus, RunSummary
from launcher.values import ValuesError

STATE_ENV = "TVQ_LAUNCHER_STATE"
POLL_S = 0.2
KILL_GRACE_S = 10.0


def state_root() -> Path:
    """Where local runs are kept."""
    default = Path.home() / ".local" / "state" / "tvq-launcher"
    return Path(os.environ.get(STATE_ENV) or default)


def tvq_executable() -> str:
    """The installed `tvq` script: beside this Python first, then on PATH."""
    beside = Path(sys.executable).parent / "tvq"
    found = str(beside) if beside.is_file() else shutil.which("tvq")
    if not found:
        raise PreflightError("tvq: not installed; the local backend runs the installed `tvq` "
                             "(pip install -e '.[train]')")
    return found


def alive(pid: int) -> bool:
    """Whether process `pid` runs (reaping it first if it is our own finished child)."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0]:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_json(path: Path) -> dict[str, Any]:
    """A JSON file written by `write_json`."""
    return json.loads(path.read_text(encoding="utf-8"))


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Write JSON atomically, so readers in other shells never see half a file."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
    os.replace(tmp, path)


def _pod_env(env: list[dict[str, Any]], job_index: int, completion_index: int) -> dict[str, str]:
    """A pod's rendered env as Kubernetes would resolve it for this pod, on this machine."""
    resolved = {"JOB_COMPLETION_INDEX": str(completion_index)}
    for entry in env:
        name, source = entry["name"], entry.get("valueFrom")
        if source is None:
            resolved[name] = str(entry.get("value", ""))
        elif source.get("fieldRef", {}).get("fieldPath", "").endswith(f"['{JOB_INDEX_KEY}']"):
            resolved[name] = str(job_index)
        elif "secretKeyRef" in source and name in os.environ:
            resolved[name] = os.environ[name]  # a secret locally comes from your own env
    return resolved


def plan_pods(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every pod of the rendered JobSet: worker id, indices, tvq argv and resolved env."""
    jobset = next(obj for obj in objects if obj["kind"] == "JobSet")
    pods = []
    for replicated in jobset["spec"]["replicatedJobs"]:
        job = replicated["template"]["spec"]
        container = next(c for c in job["template"]["spec"]["containers"]
                         if c["name"] == CONTAINER)
        per_job = job["parallelism"]
        for job_index in range(replicated["replicas"]):
            for completion_index in range(per_job):
                pods.append({
                    "worker": job_index * per_job + completion_index,
                    "job_index": job_index,
                    "completion_index": completion_index,
                    "args": list(container["args"]),
                    "env": _pod_env(container["env"], job_index, completion_index),
                })
    return pods


class LocalBackend:
    """Runs, inspects and kills local runs kept in the state directory."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root or state_root()

    def run_dir(self, name: str) -> Path:
        """The state directory of run `name`."""
        return self.root / name

    def _status_file(self, name: str) -> dict[str, Any]:
        path = self.run_dir(name) / "status.json"
        if not path.is_file():
            raise LauncherError(f"{name}: no such local run in {self.root}")
        return read_json(path)

    def _supervisor(self, name: str) -> int | None:
        """The supervisor's pid (written by submit right after starting it)."""
        path = self.run_dir(name) / "supervisor.pid"
        return int(path.read_text(encoding="utf-8")) if path.is_file() else None

    def _live(self, name: str) -> bool:
        path = self.run_dir(name) / "status.json"
        return path.is_file() and self._phase(name, read_json(path)) in ("Pending", "Running")

    def preflight(self, values: Mapping[str, Any], name: str, replace: bool) -> None:
        """Check that tvq is installed and that no live run of this name would be replaced."""
        tvq_executable()
        if self._live(name) and not replace:
            raise PreflightError(f"{name}: a run of this name is still running; kill it first "
                                 "or pass --replace")

    def submit(self, values: Mapping[str, Any], name: str, objects: list[dict[str, Any]],
               replace: bool) -> None:
        """Start run `name` under a detached supervisor; returns once it is recorded."""
        self.preflight(values, name, replace)
        if self._live(name):
            self.kill(name)
        run_dir = self.run_dir(name)
        shutil.rmtree(run_dir, ignore_errors=True)
        (run_dir / "logs").mkdir(parents=True)
        write_json(run_dir / "run.json", {
            "name": name, "tvq": tvq_executable(), "max_restarts": values["maxRestarts"],
            "pods": plan_pods(objects), "objects": objects,
        })
        write_json(run_dir / "status.json", {
            "name": name, "state": "Pending", "attempt": 0, "restarts": 0,
            "max_restarts": values["maxRestarts"], "created": time.time(), "finished": None,
            "workers": [],
        })
        with open(run_dir / "supervisor.log", "ab") as log:
            supervisor = subprocess.Popen(
                [sys.executable, "-m", "launcher.supervisor", str(run_dir)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, close_fds=True)
        (run_dir / "supervisor.pid").write_text(str(supervisor.pid), encoding="utf-8")

    def _phase(self, name: str, state: Mapping[str, Any]) -> str:
        """The recorded state, or Lost when the supervisor died without recording an end."""
        supervisor = self._supervisor(name)
        if state["state"] in ("Pending", "Running") and supervisor and not alive(supervisor):
            return "Lost"
        return state["state"]

    def status(self, name: str) -> RunStatus:
        """The run's state, its workers and the leader's latest metrics."""
        state = self._status_file(name)
        phase = self._phase(name, state)
        pods = [PodStatus(worker=w["worker"], attempt=w["attempt"], name=f"pid {w['pid']}",
                          phase=w["phase"], node="localhost", exit_code=w["exit_code"])
                for w in state["workers"]]
        leader = self.run_dir(name) / "logs" / f"attempt-{state['attempt']}" / "worker-0.log"
        metrics = None
        if leader.is_file():
            with open(leader, encoding="utf-8", errors="replace") as handle:
                metrics = last_metrics(handle)
        return RunStatus(name=name, state=phase, restarts=state["restarts"],
                         max_restarts=state["max_restarts"], created=state["created"],
                         pods=pods, metrics=metrics)

    def logs(self, name: str, out: TextIO, worker: int | None = None, follow: bool = False,
             since_s: int | None = None, deadline: float | None = None) -> None:
        """Print every attempt's worker logs with prefixes; with follow, until the run ends."""
        if since_s is not None:
            raise ValuesError("--since: supported by the kubernetes backend only")
        self._status_file(name)
        writer = PrefixedWriter(out)
        offsets: dict[Path, int] = {}
        partial: dict[Path, str] = {}
        while True:
            finished = self._phase(name, self._status_file(name)) not in ("Pending", "Running")
            for path in sorted((self.run_dir(name) / "logs").glob("attempt-*/worker-*.log"),
                               key=_log_order):
                attempt, number = _log_order(path)
                if worker is not None and number != worker:
                    continue
                with open(path, encoding="utf-8", errors="replace") as handle:
                    handle.seek(offsets.get(path, 0))
                    text = partial.pop(path, "") + handle.read()
                    offsets[path] = handle.tell()
                lines = text.split("\n")
                tail = lines.pop()  # text after the last newline: a line still being written
                if tail and follow and not finished:
                    partial[path] = tail
                elif tail:
                    lines.append(tail)
                for line in lines:
                    writer.write(prefix(number, attempt), line)
            if not follow or finished or (deadline is not None and time.time() >= deadline):
                return
            time.sleep(POLL_S)

    def kill(self, name: str) -> None:
        """Stop the supervisor and every worker's process group; the run is recorded Killed."""
        self._status_file(name)
        supervisor = self._supervisor(name)
        if supervisor and alive(supervisor):
            os.kill(supervisor, signal.SIGTERM)
            end = time.time() + KILL_GRACE_S
            while alive(supervisor) and time.time() < end:
                time.sleep(POLL_S)
            if alive(supervisor):
                os.killpg(supervisor, signal.SIGKILL)
        state = self._status_file(name)
        for entry in state["workers"]:  # only if the supervisor could not stop them itself
            if entry["phase"] != "Running":
                continue
            try:
                os.killpg(entry["pid"], signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if state["state"] in ("Pending", "Running"):
            state.update(state="Killed", finished=time.time())
            write_json(self.run_dir(name) / "status.json", state)

    def list_runs(self) -> list[RunSummary]:
        """Every local run with its state and the leader's latest step."""
        runs = []
        if self.root.is_dir():
            for path in sorted(self.root.glob("*/status.json")):
                status = self.status(path.parent.name)
                step = status.metrics.get("step", "") if status.metrics else ""
                runs.append(RunSummary(name=status.name, created=status.created,
                                       state=status.state, step=step))
        return runs


def _log_order(path: Path) -> tuple[int, int]:
    """(attempt, worker) of a log path logs/attempt-<k>/worker-<w>.log."""
    return int(path.parent.name.split("-")[1]), int(path.stem.split("-")[1])
