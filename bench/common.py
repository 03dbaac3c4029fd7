"""What every benchmark shares: its command line, the machine record, timing, memory, results.

Timings are wall-clock medians of steps run after a warm-up (compilation excluded). Memory is
reported two ways: XLA's compiled estimate (arguments + outputs + temporaries - aliased) and the
measured peak (device allocator peak on GPU/TPU, process peak RSS on CPU). Measurements that
might not fit run in a fresh subprocess each, so one running out of memory cannot take the
others down and each peak RSS is its own.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

RESULTS_DIR = Path(__file__).resolve().parent / "results"
REPO_ROOT = Path(__file__).resolve().parent.parent
_TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
GIB = 2**30
# The model the scaling and sampling benchmarks measure (over the `cpu` preset): d_v == d_k
# because the quadratic peer's jax.nn.dot_product_attention takes one head width; block, memory
# and codebook lengths equal, as in the paper (L = M = S).
BENCH_MODEL = {"d_model": 128, "d_k": 128, "d_v": 128, "n_layer": 2, "block_len": 256,
               "mem_len": 256, "n_code": 256}


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: {message}\n")
        sys.exit(2)


def fail(prog: str, message: str) -> None:
    """Stop with one line naming the bad option and what is allowed, exit code 2."""
    sys.stderr.write(f"{prog}: {message}\n")
    sys.exit(2)


def device_tag(text: str) -> str:
    """argparse type for --device-tag: a short name safe in file names."""
    if not _TAG.match(text):
        raise argparse.ArgumentTypeError(
            f"--device-tag: got {text!r}; allowed: 1-63 letters, digits, '.', '_' or '-'")
    return text


def size_list(text: str) -> list[int]:
    """argparse type for a comma-separated list of positive integers, e.g. 1024,2048."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(
            f"got {text!r}; allowed: comma-separated integers >= 1, e.g. 1024,2048")
    return values


def base_parser(name: str, description: str) -> OneLineParser:
    """The options every benchmark has: --device-tag and --out."""
    parser = OneLineParser(prog=f"python -m bench.{name}", description=description)
    parser.add_argument("--device-tag", type=device_tag, default="cpu",
                        help="names the machine in the result files (default: cpu)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR,
                        help="folder for NAME-TAG.json and NAME-TAG.png (default: bench/results)")
    return parser


def add_set_option(parser: OneLineParser, what: str, example: str) -> None:
    """--set SECTION.FIELD=VALUE (repeatable), overriding `what`."""
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help=f"override {what} (repeatable), e.g. {example}")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def available_memory_bytes() -> int:
    """Memory the next measurement may use: the device's limit, else MemAvailable on the host."""
    import jax

    stats = jax.devices()[0].memory_stats() or {}
    if "bytes_limit" in stats:
        return int(stats["bytes_limit"])
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def machine_info(tag: str) -> dict[str, Any]:
    """Where and when a result was measured, including the load that might disturb it."""
    import jax

    device = jax.devices()[0]
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {
        "device_tag": tag,
        "backend": jax.default_backend(),
        "device_kind": device.device_kind,
        "device_count": jax.device_count(),
        "cpu": _cpu_model(),
        "cpu_cores": os.cpu_count(),
        "memory_gib": round(total / GIB, 1),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "load_avg_1_5_15_at_start": [round(x, 2) for x in os.getloadavg()],
        "started_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def block(tree: Any) -> Any:
    """Wait until every array in `tree` is computed."""
    import jax

    return jax.block_until_ready(tree)


def median_seconds(step: Callable[[], Any], warmup: int, repeats: int,
                   enough_s: float = float("inf")) -> dict[str, Any]:
    """Run `step` warmup times, then `repeats` times timed; median and min seconds.

    The warm-up runs are timed too: when one alone takes `enough_s` or longer (a step so slow
    that start-up effects are noise), it is the measurement and no further step runs.
    """
    for _ in range(warmup):
        start = time.perf_counter()
        block(step())
        seconds = time.perf_counter() - start
        if seconds >= enough_s:
            return {"median_s": seconds, "min_s": seconds, "repeats": 1, "warmup_timed": True}
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        block(step())
        times.append(time.perf_counter() - start)
    times.sort()
    return {"median_s": times[len(times) // 2], "min_s": times[0], "repeats": repeats}


def compiled_bytes(compiled: Any) -> int:
    """XLA's estimate of the memory a compiled function needs while it runs."""
    stats = compiled.memory_analysis()
    if stats is None:
        return -1
    return int(stats.argument_size_in_bytes + stats.output_size_in_bytes
               + stats.temp_size_in_bytes - stats.alias_size_in_bytes)


def measured_peak_bytes() -> int:
    """The peak memory really used: device allocator peak on accelerators, else peak RSS."""
    import jax

    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        return int(stats["peak_bytes_in_use"])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_worker(module: str, spec: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    """Run one measurement as `python -m MODULE --worker SPEC` and return its JSON result.

    A worker killed by the kernel (out of memory) or running past `timeout_s` is reported as
    such instead of raising, so one size that does not fit ends only its own row.
    """
    command = [sys.executable, "-m", module, "--worker", json.dumps(spec)]
    try:
        done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True,
                              timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        return {**spec, "status": "timeout", "timeout_s": timeout_s}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode == 0 and lines:
        return json.loads(lines[-1])
    status = "killed (out of memory)" if done.returncode in (-9, 137) else "failed"
    tail = done.stderr.strip().splitlines()[-3:]
    return {**spec, "status": status, "returncode": done.returncode, "stderr_tail": tail}


def worker_main(measure: Callable[[dict[str, Any]], dict[str, Any]], argv: Sequence[str]) -> bool:
    """If argv is `--worker SPEC`, run `measure(SPEC)`, print its JSON line and return True."""
    if len(argv) != 2 or argv[0] != "--worker":
        return False
    spec = json.loads(argv[1])
    print(json.dumps({**spec, **measure(spec)}), flush=True)
    return True


def write_result(out_dir: Path, name: str, tag: str, payload: dict[str, Any]) -> Path:
    """Write NAME-TAG.json under out_dir (created if needed) with the end load added."""
    out_dir.mkdir(parents=True, exist_ok=True)
    payload["machine"]["load_avg_1_5_15_at_end"] = [round(x, 2) for x in os.getloadavg()]
    path = out_dir / f"{name}-{tag}.json"
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def new_figure(title: str, ncols: int = 2) -> tuple[Any, Any]:
    """A matplotlib figure (no display needed) with `ncols` side-by-side axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, ncols, figsize=(6 * ncols, 4.5), squeeze=False)
    figure.suptitle(title)
    return figure, list(axes[0])


def save_figure(figure: Any, out_dir: Path, name: str, tag: str) -> Path:
    """Save the figure as NAME-TAG.png under out_dir."""
    import matplotlib.pyplot as plt

    path = out_dir / f"{name}-{tag}.png"
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator rounded to 2 decimals, or None when either is missing."""
    if not numerator or not denominator:
        return None
    return round(numerator / denominator, 2)
