"""Training metrics: one `tvq-metrics` line per logging step, JSON lines, W&B, a TTY progress bar.

Only the leader (process 0) writes any of these. The stdout line format is a contract with the
launcher: `tvq-metrics step=<int> loss=<f> bpb=<f> tokens_per_s=<f> lr=<f> grad_norm=<f>` followed
by any extra `key=value` pairs (keys never contain spaces).
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from typing import Any, Mapping

from tvq.config import Config, ConfigError, RunConfig, to_dict

PREFIX = "tvq-metrics"
REQUIRED = ("loss", "bpb", "tokens_per_s", "lr", "grad_norm")


def format_line(step: int, values: Mapping[str, float]) -> str:
    """The stdout line for one logging step; the required keys first, then the rest sorted."""
    missing = [key for key in REQUIRED if key not in values]
    if missing:
        raise KeyError(f"metrics missing {', '.join(missing)}")
    extra = sorted(key for key in values if key not in REQUIRED)
    pairs = " ".join(f"{key}={float(values[key]):.6g}" for key in (*REQUIRED, *extra))
    return f"{PREFIX} step={int(step)} {pairs}"


def parse_line(line: str) -> dict[str, float] | None:
    """Parse a `tvq-metrics` line back into a dict (step as int), or None for other lines."""
    words = line.split()
    if not words or words[0] != PREFIX:
        return None
    values: dict[str, float] = {}
    for word in words[1:]:
        key, _, value = word.partition("=")
        values[key] = int(value) if key == "step" else float(value)
    return values


def check_wandb(run: RunConfig) -> None:
    """Fail early (ConfigError) when W&B is set online without an API key in the environment."""
    if run.wandb_mode == "online" and not os.environ.get("WANDB_API_KEY"):
        raise ConfigError("run.wandb_mode: online needs WANDB_API_KEY in the environment; "
                          "allowed without it: offline, disabled")


def wandb_run_id(run: RunConfig) -> str:
    """run.wandb_run_id, else the id kept in run.out_dir (made on first use), so that a
    restarted run (a preempted pod, a resumed checkpoint) continues the same W&B run."""
    if run.wandb_run_id:
        return run.wandb_run_id
    from etils import epath

    path = epath.Path(run.out_dir) / "wandb_run_id"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(uuid.uuid4().hex[:12])
    return path.read_text().strip()


class MetricsLogger:
    """Writes logged steps to stdout, the metrics file and W&B; a no-op on other processes."""

    def __init__(self, config: Config, is_leader: bool, total_steps: int,
                 start_step: int = 0) -> None:
        run = config.run
        self.enabled = is_leader
        self.file = None
        self.wandb_run = None
        self.progress = None
        if not is_leader:
            return
        if run.metrics_file:
            directory = os.path.dirname(os.path.abspath(run.metrics_file))
            os.makedirs(directory, exist_ok=True)
            self.file = open(run.metrics_file, "a", encoding="utf-8")  # appends across restarts
        if run.wandb_mode != "disabled":
            import wandb

            self.wandb_run = wandb.init(
                project=run.wandb_project, mode=run.wandb_mode, config=to_dict(config),
                id=wandb_run_id(run), resume="allow")
        if sys.stdout.isatty():
            from rich.progress import Progress

            self.progress = Progress(transient=True)
            self.progress.start()
            self.task = self.progress.add_task("train", total=total_steps, completed=start_step)

    def advance(self, step: int) -> None:
        """Move the progress bar (when there is one) to `step`."""
        if self.progress is not None:
            self.progress.update(self.task, completed=step)

    def log(self, step: int, values: Mapping[str, Any]) -> None:
        """Record one logging step everywhere this logger writes."""
        if not self.enabled:
            return
        floats = {key: float(value) for key, value in values.items()}
        line = format_line(step, floats)
        if self.progress is not None:
            self.progress.console.print(line, markup=False, highlight=False)
        else:
            print(line, flush=True)
        if self.file is not None:
            self.file.write(json.dumps({"step": int(step), **floats}) + "\n")
            self.file.flush()
        if self.wandb_run is not None:
            self.wandb_run.log(floats, step=int(step))

    def close(self) -> None:
        """Stop the progress bar and close the file and the W&B run."""
        if self.progress is not None:
            self.progress.stop()
        if self.file is not None:
            self.file.close()
        if self.wandb_run is not None:
            self.wandb_run.finish()


__all__ = ["PREFIX", "REQUIRED", "MetricsLogger", "check_wandb", "format_line", "parse_line",
           "wandb_run_id"]
