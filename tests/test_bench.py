"""Smoke tests of bench/: every benchmark at its smallest size, and its bad-input handling.

Timings are never checked (they depend on the machine and its load); what is checked is that
each benchmark runs the real code path and writes a complete result: rows that ran, their
measurements, the machine record and the plot.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import attention_scaling, render_speed, report, sampling, throughput

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY_MODEL = ["model.d_model=32", "model.d_k=16", "model.d_v=16", "model.n_layer=1",
              "model.block_len=16", "model.mem_len=16", "model.n_code=8"]


def _sets(assignments: list[str]) -> list[str]:
    return [word for assignment in assignments for word in ("--set", assignment)]


def _result(out: Path, name: str) -> dict:
    assert (out / f"{name}-smoke.png").stat().st_size > 0
    result = json.loads((out / f"{name}-smoke.json").read_text())
    assert result["benchmark"] == name
    assert result["machine"]["device_tag"] == "smoke"
    assert len(result["machine"]["load_avg_1_5_15_at_end"]) == 3
    return result


def test_attention_scaling_runs_every_variant(tmp_path: Path) -> None:
    code = attention_scaling.main(["--device-tag", "smoke", "--out", str(tmp_path),
                                   "--lengths", "32", "--repeats", "1",
                                   *_sets(TINY_MODEL)])
    assert code == 0
    result = _result(tmp_path, "attention_scaling")
    rows = {row["variant"]: row for row in result["rows"]}
    assert set(rows) == {"vq", "full", "peer"}
    for row in rows.values():
        assert row["status"] == "ok", row
        assert row["seq_len"] == 32 and row["us_per_token"] > 0 and row["compiled_bytes"] > 0
        assert row["peak_bytes"] > row["compiled_bytes"]
    assert result["model"]["d_model"] == 32
    (per_length,) = result["summary"]["per_length"]
    assert per_length["speedup_vs_peer"] > 0 and per_length["speedup_vs_full"] > 0


def test_attention_scaling_records_out_of_memory_and_skips_longer(tmp_path: Path) -> None:
    rows = attention_scaling.run_sweep([64, 32], ["peer"], 1, 1, TINY_MODEL, 300.0,
                                       memory_budget_bytes=1024)
    assert [(row["seq_len"], row["status"]) for row in rows] == [
        (32, "out of memory (compiled estimate)"),
        (64, "skipped (out of memory (compiled estimate) at a smaller T)")]
    assert rows[0]["compiled_bytes"] > rows[0]["budget_bytes"] == 1024
    assert attention_scaling.summarize(rows)["first_T_not_run"]["peer"] == 32


def test_sampling_times_every_series(tmp_path: Path) -> None:
    code = sampling.main(["--device-tag", "smoke", "--out", str(tmp_path), "--contexts", "32",
                          "--tokens", "2", *_sets(TINY_MODEL)])
    assert code == 0
    result = _result(tmp_path, "sampling")
    assert {row["series"] for row in result["rows"]} == {"vq", "vq-block1", "full"}
    assert all(row["context"] == 32 and row["us_per_token"] > 0 for row in result["rows"])


def test_throughput_with_two_processes(tmp_path: Path) -> None:
    code = throughput.main(["--device-tag", "smoke", "--out", str(tmp_path), "--steps", "4",
                            "--log-every", "2", "--processes", "2",
                            *_sets(TINY_MODEL + ["optimizer.warmup_steps=1"])])
    assert code == 0
    (row,) = _result(tmp_path, "throughput")["rows"]
    assert row["processes"] == 2 and row["status"] == "ok", row
    assert row["tokens_per_s"] > 0 and row["final_step"] == 4 and row["final_loss"] > 0


def test_render_speed_times_launcher_and_helm_and_reports(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    values = REPO_ROOT / "k8s" / "examples" / "cpu-kind.values.yaml"
    code = render_speed.main(["--device-tag", "smoke", "--out", str(tmp_path), "--repeats", "1",
                              "--values", str(values)])
    assert code == 0
    (row,) = _result(tmp_path, "render_speed")["rows"]
    assert row["values"] == "k8s/examples/cpu-kind.values.yaml"
    assert row["launcher_render_s"] > 0 and row["helm_template_s"] > 0
    assert row["launcher_in_process_s"] > 0
    assert report.main(["--device-tag", "smoke", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "| cpu-kind.values.yaml |" in printed and "smoke: cpu" in printed


@pytest.mark.parametrize(("module", "args", "message"), [
    ("attention_scaling", ["--lengths", "1024,0"], "allowed: comma-separated integers >= 1"),
    ("attention_scaling", ["--variants", "vq,flash"], "--variants: got 'vq,flash'; allowed:"),
    ("attention_scaling", ["--lengths", "1000"], "model.block_len: got 256; allowed: a divisor"),
    ("attention_scaling", ["--set", "model.d_v=256"], "model.d_v: got 256; allowed for the "
                                                      "quadratic peer"),
    ("sampling", ["--series", "rnn"], "--series: got 'rnn'; allowed:"),
    ("sampling", ["--contexts", "1536"], "--contexts: got 1536; allowed: multiples"),
    ("throughput", ["--processes", "3"], "--processes: got 3; allowed: a divisor"),
    ("render_speed", ["--values", "no/such.yaml"], "--values: no such file"),
    ("render_speed", ["--device-tag", "a b"], "--device-tag: got 'a b'; allowed:"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          module: str, args: list[str], message: str) -> None:
    kept = tmp_path / f"{module}-cpu.json"
    kept.write_text("earlier result\n")
    benchmark = {"attention_scaling": attention_scaling, "sampling": sampling,
                 "throughput": throughput, "render_speed": render_speed}[module]
    with pytest.raises(SystemExit) as stopped:
        benchmark.main(["--out", str(tmp_path), *args])
    assert stopped.value.code == 2
    printed = capsys.readouterr()
    assert printed.out == "" and len(printed.err.strip().splitlines()) == 1, printed.err
    assert message in printed.err
    assert sorted(path.name for path in tmp_path.iterdir()) == [kept.name]
    assert kept.read_text() == "earlier result\n"


def test_a_bad_option_from_the_command_line_exits_2(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "bench.throughput", "--out", str(tmp_path),
                           "--steps", "0"], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2
    assert done.stderr == ("python -m bench.throughput: --steps: got 0; allowed: an integer "
                           ">= 1\n")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["attention_scaling", "sampling", "throughput", "render_speed"])
def test_every_benchmark_prints_its_help(name):
    """A user's first call; argparse formats every help text only here."""
    done = subprocess.run([sys.executable, "-m", f"bench.{name}", "--help"], capture_output=True,
                          text=True, timeout=60, cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr[-2000:]
    assert "--device-tag" in done.stdout
