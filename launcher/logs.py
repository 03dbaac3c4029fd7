"""Log lines: the worker prefix every streamed line gets, and the trainer's metrics lines."""

from __future__ import annotations

import threading
from typing import Iterable, TextIO

METRICS_PREFIX = "tvq-metrics"


def prefix(worker: int, attempt: int) -> str:
    """The prefix of a worker's lines; the restart attempt is shown once the run has restarted."""
    return f"[worker {worker}]" if attempt == 0 else f"[worker {worker} restart {attempt}]"


def parse_metrics(line: str) -> dict[str, str] | None:
    """The key=value pairs of a `tvq-metrics step=.. loss=..` line, else None."""
    words = line.strip().split()
    if not words or words[0] != METRICS_PREFIX:
        return None
    pairs = dict(word.split("=", 1) for word in words[1:] if "=" in word)
    return pairs if "step" in pairs else None


def last_metrics(lines: Iterable[str]) -> dict[str, str] | None:
    """The last metrics line among `lines`, parsed."""
    found = None
    for line in lines:
        found = parse_metrics(line) or found
    return found


class PrefixedWriter:
    """Writes whole lines from several threads, each with its worker's prefix."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._lock = threading.Lock()

    def write(self, tag: str, line: str) -> None:
        """Write one line (its newline added when missing)."""
        text = f"{tag} {line.rstrip(chr(10))}\n"
        with self._lock:
            self._out.write(text)
            self._out.flush()
