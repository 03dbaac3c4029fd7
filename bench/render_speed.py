"""Rendering a run: `launcher render` against `helm template`, wall time for the same values.

For each values file (default: every k8s/examples/*.values.yaml) both commands render the run,
each as a fresh process, as a person runs them; the median of the repeats is reported. The
launcher is also timed in-process (`launcher.cli.main`, imports already done), which shows how
much of its time is interpreter start-up. The launcher runs as `python -m launcher.cli`, the code
behind the `launcher` console script, without any shell shim in front of it.

    python -m bench.render_speed --device-tag cpu-2core
"""

from __future__ import annotations

import contextlib
import io
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from bench import common

NAME = "render_speed"
CHART = common.REPO_ROOT / "charts" / "tvq-train"
EXAMPLES = common.REPO_ROOT / "k8s" / "examples"


def default_helm() -> str:
    """The helm the tests use: PATH first, else the copy tests/helm_tool.py keeps in .cache/."""
    sys.path.insert(0, str(common.REPO_ROOT / "tests"))
    import helm_tool

    return helm_tool.helm_binary()


def _median_wall(run: Callable[[], None], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _command(argv: list[str]) -> Callable[[], None]:
    def run() -> None:
        subprocess.run(argv, cwd=common.REPO_ROOT, check=True, capture_output=True)
    return run


def _in_process(argv: list[str]) -> Callable[[], None]:
    from launcher.cli import main

    def run() -> None:
        with contextlib.redirect_stdout(io.StringIO()):
            if main(argv) != 0:
                raise RuntimeError(f"launcher {' '.join(argv)} failed")
    return run


def measure(values: Path, helm: str, repeats: int) -> dict[str, Any]:
    """Median seconds of the three ways to render one values file."""
    name = values.name.removesuffix(".values.yaml").removesuffix(".yaml")
    launcher_argv = ["render", "-f", str(values), "--name", name]
    helm_argv = [helm, "template", name, str(CHART), "--namespace", "default",
                 "--values", str(values)]
    row = {
        "values": str(values.relative_to(common.REPO_ROOT)) if values.is_relative_to(
            common.REPO_ROOT) else str(values),
        "launcher_render_s": _median_wall(
            _command([sys.executable, "-m", "launcher.cli", *launcher_argv]), repeats),
        "helm_template_s": _median_wall(_command(helm_argv), repeats),
        "launcher_in_process_s": _median_wall(_in_process(launcher_argv), repeats),
    }
    row["helm_over_launcher"] = common.ratio(row["helm_template_s"], row["launcher_render_s"])
    print(f"{name}: launcher {row['launcher_render_s'] * 1e3:.0f} ms, helm "
          f"{row['helm_template_s'] * 1e3:.0f} ms, launcher in-process "
          f"{row['launcher_in_process_s'] * 1e3:.1f} ms", flush=True)
    return row


def plot(rows: list[dict[str, Any]], out_dir: Path, tag: str) -> Path:
    """Grouped bars: milliseconds per values file for each way of rendering."""
    figure, (axis,) = common.new_figure(f"Rendering a run's manifests ({tag})", 1)
    keys = (("launcher_render_s", "launcher render"), ("helm_template_s", "helm template"),
            ("launcher_in_process_s", "launcher, in-process"))
    width = 0.8 / len(keys)
    for index, (key, label) in enumerate(keys):
        axis.bar([i + index * width for i in range(len(rows))], [r[key] * 1e3 for r in rows],
                 width, label=label)
    axis.set_xticks([i + width for i in range(len(rows))],
                    [Path(r["values"]).name.split(".")[0] for r in rows], fontsize=8)
    axis.set_ylabel("milliseconds (median)")
    axis.set_ylim(top=1.4 * max(r[key] * 1e3 for r in rows for key, _ in keys))  # legend room
    axis.grid(True, axis="y", alpha=0.3)
    axis.legend()
    return common.save_figure(figure, out_dir, NAME, tag)


def main(argv: list[str] | None = None) -> int:
    """Time both renderers on each values file and write render_speed-TAG.json and .png."""
    parser = common.base_parser(NAME, __doc__.splitlines()[0])
    parser.add_argument("--values", type=Path, action="append", default=[], metavar="FILE",
                        help="values file (repeatable; default: k8s/examples/*.values.yaml)")
    parser.add_argument("--repeats", type=int, default=10, help="runs of each (default: 10)")
    parser.add_argument("--helm", help="helm binary (default: PATH, else tests/helm_tool.py's)")
    args = parser.parse_args(argv)
    files = [path.resolve() for path in args.values] or sorted(EXAMPLES.glob("*.values.yaml"))
    missing = [path for path in files if not path.is_file()]
    if missing:
        common.fail(parser.prog, f"--values: no such file {str(missing[0])!r}; allowed: a "
                    "readable YAML file of the chart's values")
    if not files:
        common.fail(parser.prog, f"--values: none given and none in {EXAMPLES}")
    if args.repeats < 1:
        common.fail(parser.prog, f"--repeats: got {args.repeats}; allowed: an integer >= 1")
    helm = args.helm or default_helm()
    version = subprocess.run([helm, "version", "--short"], capture_output=True, text=True,
                             check=True).stdout.strip()
    machine = common.machine_info(args.device_tag)
    rows = [measure(path, helm, args.repeats) for path in files]
    payload = {"benchmark": NAME, "machine": machine, "helm_version": version,
               "repeats": args.repeats, "rows": rows}
    print(common.write_result(args.out, NAME, args.device_tag, payload))
    print(plot(rows, args.out, args.device_tag))
    return 0


if __name__ == "__main__":
    sys.exit(main())
