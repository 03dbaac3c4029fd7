"""What `status` and `list` show, for both backends, and how it is printed."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

TERMINAL_STATES = ("Succeeded", "Failed", "Killed", "Lost")  # Lost: local supervisor died


@dataclass(frozen=True)
class PodStatus:
    """One pod (Kubernetes) or worker process (local) of a run."""

    worker: int  # job_index * pods_per_job + completion_index
    attempt: int  # JobSet restart attempt the pod belongs to
    name: str  # pod name, or the local process id
    phase: str  # Pending, Running, Succeeded, Failed
    node: str = ""
    restarts: int = 0  # container restarts (always 0: restartPolicy Never)
    exit_code: int | None = None


@dataclass(frozen=True)
class RunStatus:
    """A run as `launcher status` shows it."""

    name: str
    state: str  # Pending, Running, Succeeded, Failed, Killed, Suspended, Lost
    restarts: int
    max_restarts: int
    created: float  # epoch seconds
    conditions: list[str] = field(default_factory=list)
    pods: list[PodStatus] = field(default_factory=list)
    metrics: dict[str, str] | None = None  # the leader's latest metrics line

    @property
    def finished(self) -> bool:
        """Whether the run has ended (no pod will run again)."""
        return self.state in TERMINAL_STATES


@dataclass(frozen=True)
class RunSummary:
    """One row of `launcher list`."""

    name: str
    created: float
    state: str
    step: str = ""


def age(created: float, now: float | None = None) -> str:
    """A short age such as 45s, 12m, 3h, 2d."""
    seconds = max(0, int((now or time.time()) - created))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip()
                     for row in rows)


def format_status(status: RunStatus) -> str:
    """The multi-line text of `launcher status`."""
    lines = [f"run {status.name}: {status.state}  age {age(status.created)}  restarts "
             f"{status.restarts}/{status.max_restarts}"]
    if status.conditions:
        lines.append("conditions: " + ", ".join(status.conditions))
    if status.metrics:
        keys = ("step", "loss", "bpb", "tokens_per_s", "lr")
        shown = " ".join(f"{k}={status.metrics[k]}" for k in keys if k in status.metrics)
        lines.append(f"leader: {shown}")
    else:
        lines.append("leader: no metrics yet")
    rows = [["WORKER", "ATTEMPT", "POD", "PHASE", "NODE", "RESTARTS", "EXIT"]]
    for pod in sorted(status.pods, key=lambda p: (p.attempt, p.worker)):
        rows.append([str(pod.worker), str(pod.attempt), pod.name, pod.phase, pod.node or "-",
                     str(pod.restarts), "-" if pod.exit_code is None else str(pod.exit_code)])
    return "\n".join(lines + [_table(rows)])


def format_list(runs: list[RunSummary]) -> str:
    """The table of `launcher list`."""
    rows = [["NAME", "AGE", "STATE", "STEP"]]
    rows += [[run.name, age(run.created), run.state, run.step or "-"]
             for run in sorted(runs, key=lambda r: r.created)]
    return _table(rows)
