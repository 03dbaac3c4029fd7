"""Every `tvq` command end to end on a tiny model: train, val, test, sample, train-vocab."""

import json
import re

import yaml

from trainkit import (TINY_FLAGS, compile_cache, run_tvq,  # noqa: F401 (fixtures)
                      trained_run)

from tvq.cli import main

METRICS_LINE = re.compile(r"^tvq-metrics step=\d+ loss=\S+ bpb=\S+ tokens_per_s=\S+ lr=\S+ "
                          r"grad_norm=\S+( [a-z_]+=\S+)*$")


def test_tvq_train_prints_contract_lines_writes_metrics_file_and_checkpoints(tmp_path,
                                                                            compile_cache):
    out, metrics = tmp_path / "run", tmp_path / "metrics.jsonl"
    done = run_tvq(["train", *TINY_FLAGS, "--steps", "8", "-o", str(out), "--metrics-file",
                    str(metrics)], compile_cache)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("tvq-metrics")]
    assert len(lines) == 4 and all(METRICS_LINE.match(line) for line in lines), lines
    assert "tvq: process 0 of 1" in done.stdout and "dataset=synthetic" in done.stdout
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4, 6, 8]
    assert sorted(p.name for p in out.iterdir() if p.name.isdigit()) == ["8"]
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["optimizer"]["max_steps"] == 8 and saved["run"]["out_dir"] == str(out)


def test_val_test_and_sample_read_the_trained_checkpoint(trained_run, tmp_path, capsys):
    flags = [*TINY_FLAGS, "-o", trained_run.run.out_dir, "--set", "run.eval_steps=1"]
    summaries = tmp_path / "eval.jsonl"
    assert main(["val", *flags, "--metrics-file", str(summaries)]) == 0
    assert main(["test", *flags, "--metrics-file", str(summaries)]) == 0
    records = [json.loads(line) for line in summaries.read_text().splitlines()]
    assert [r["split"] for r in records] == ["validation", "test"]
    assert all(r["step"] == 8 and r["bpb"] > 0 for r in records)
    assert main(["sample", *flags, "--set", "run.sample_len=8"]) == 0
    written = [line.split(" to ", 1)[1] for line in capsys.readouterr().out.splitlines()
               if line.startswith("tvq: sample written to ")]
    assert written and all(open(path, "rb").read() for path in written)


def test_train_vocab_writes_a_sentencepiece_model(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.txt").write_text("the quick brown fox jumps over the lazy dog\n" * 200)
    vocab = tmp_path / "vocab" / "spm.model"
    assert main(["train-vocab", "--dataset", "text", "-d", str(data), "-v", str(vocab),
                 "--set", "model.vocab_size=40"]) == 0
    assert vocab.stat().st_size > 0


def test_problems_found_after_start_are_one_line_exit_2_and_write_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    cases = [(["--set", "run.mesh_fsdp=3"], "run.mesh_data x run.mesh_fsdp: got -1 x 3"),
             (["--dataset", "text", "-d", str(tmp_path / "missing")], "data.data_dir")]
    for extra, expected in cases:
        assert main(["train", *TINY_FLAGS, "--steps", "8", "-o", str(out), *extra]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and expected in err, err
        assert not out.exists()
