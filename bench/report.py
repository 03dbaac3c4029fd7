"""Markdown tables of one machine's results, for bench/README.md and the main README.

    python -m bench.report --device-tag cpu-2core [--out bench/results]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Callable

from bench import common

GIB = common.GIB


def _load(out: Path, name: str, tag: str) -> dict[str, Any] | None:
    path = out / f"{name}-{tag}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _measured(row: dict[str, Any] | None, value: Callable[[dict[str, Any]], str]) -> str:
    """`value(row)` for a row that ran, else why it did not ("out of memory", "skipped")."""
    if row is None:
        return "–"
    return value(row) if row["status"] == "ok" else row["status"].split(" (")[0]


def scaling_table(result: dict[str, Any]) -> str:
    """T | vq, full, peer time per token | speed-ups | peak memory."""
    rows = {(r["variant"], r["seq_len"]): r for r in result["rows"]}
    speedups = {s["seq_len"]: s for s in result["summary"]["per_length"]}
    variants = ("vq", "full", "peer")
    lines = ["| T | vq µs/token | full µs/token | peer µs/token | vq vs peer | vq vs full "
             "| vq peak GiB | full peak GiB | peer peak GiB |", "|" + "---|" * 9]
    for seq_len in sorted({key[1] for key in rows}):
        cells = [f"{seq_len:,}"]
        cells += [_measured(rows.get((v, seq_len)), lambda r: f"{r['us_per_token']:,.0f}")
                  for v in variants]
        cells += [f"{speedups[seq_len][key]:.1f}x" if speedups[seq_len][key] else "–"
                  for key in ("speedup_vs_peer", "speedup_vs_full")]
        cells += [_measured(rows.get((v, seq_len)), lambda r: f"{r['peak_bytes'] / GIB:.2f}")
                  for v in variants]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def sampling_table(result: dict[str, Any]) -> str:
    """context | µs per generated token for each series."""
    series = list(dict.fromkeys(r["series"] for r in result["rows"]))
    found = {(r["series"], r["context"]): r["us_per_token"] for r in result["rows"]}
    lines = ["| context | " + " | ".join(f"{name} µs/token" for name in series) + " |",
             "|" + "---|" * (len(series) + 1)]
    for context in sorted({r["context"] for r in result["rows"]}):
        cells = [f"{found[(name, context)]:,.0f}" if (name, context) in found else "–"
                 for name in series]
        lines.append(f"| {context:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def throughput_table(result: dict[str, Any]) -> str:
    """processes | tokens/s."""
    lines = ["| processes | tokens/s (all processes) | wall time of the run |", "|---|---|---|"]
    for row in result["rows"]:
        rate = f"{row['tokens_per_s']:,.0f}" if row["status"] == "ok" else row["status"]
        lines.append(f"| {row['processes']} | {rate} | {row.get('wall_s', '–')} s |")
    return "\n".join(lines)


def render_table(result: dict[str, Any]) -> str:
    """values file | launcher render | helm template | launcher in-process (ms)."""
    lines = ["| values | `launcher render` | `helm template` | launcher in-process |",
             "|---|---|---|---|"]
    for row in result["rows"]:
        lines.append(f"| {Path(row['values']).name} | {row['launcher_render_s'] * 1e3:.0f} ms | "
                     f"{row['helm_template_s'] * 1e3:.0f} ms | "
                     f"{row['launcher_in_process_s'] * 1e3:.1f} ms |")
    return "\n".join(lines)


def machine_line(result: dict[str, Any]) -> str:
    """One line naming the machine and its load."""
    m = result["machine"]
    return (f"{m['device_tag']}: {m['device_kind']} ({m['backend']}), {m['cpu']}, "
            f"{m['cpu_cores']} cores, {m['memory_gib']} GiB, jax {m['jax']}; started "
            f"{m['started_utc']}, load {m['load_avg_1_5_15_at_start'][0]} -> "
            f"{m['load_avg_1_5_15_at_end'][0]}")


def main(argv: list[str] | None = None) -> int:
    """Print the tables of every result of --device-tag found under --out."""
    parser = common.base_parser("report", __doc__.splitlines()[0])
    args = parser.parse_args(argv)
    sections = (("attention_scaling", scaling_table), ("sampling", sampling_table),
                ("throughput", throughput_table), ("render_speed", render_table))
    found = False
    for name, table in sections:
        result = _load(args.out, name, args.device_tag)
        if result is None:
            continue
        found = True
        print(f"### {name}\n\n{machine_line(result)}\n\n{table(result)}\n")
    if not found:
        common.fail(parser.prog, f"--device-tag: no results for {args.device_tag!r} in "
                    f"{args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
