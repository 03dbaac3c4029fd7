"""The `tvq` command: train | val | test | sample | train-vocab, with the original scripts' flags.

Config layers, later wins: --preset, then the run's saved config.yaml (written by `tvq train`
into the output dir, else found in the input dir), then --config FILE, then WANDB_MODE / WANDB_PROJECT /
WANDB_RUN_ID from the environment (as the Helm chart and the launcher set them), then the named
flags, then every --set in order. Any bad input prints one line on stderr and exits 2 before JAX starts or anything is
written.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from typing import Any, NoReturn, Sequence

from tvq import config as cfg
from tvq import saved_config

PREEMPTED_EXIT_CODE = 143  # 128 + SIGTERM: not a success, so the JobSet restarts the run
COMMANDS = ("train", "val", "test", "sample", "train-vocab")
# (short, long, config key, help): the original lm_DATASET.sh flags, then the new ones.
FLAGS: tuple[tuple[str | None, str, str, str], ...] = (
    ("-r", "--seed", "run.seed", "seed for init, shuffling, dropout and sampling"),
    ("-p", "--precision", "model.dtype", "activation dtype: float32 or bfloat16"),
    ("-t", "--sequence-len", "data.sequence_len", "tokens per sequence"),
    ("-l", "--block-len", "model.block_len", "tokens per attention block"),
    ("-m", "--mem-len", "model.mem_len", "uncompressed cache length"),
    ("-s", "--codebook-size", "model.n_code", "codebook rows = compressed cache length"),
    ("-a", "--agg-cache", "model.agg_cache", "0/1: include the aggregated cache"),
    ("-g", "--grad-thru-cache", "model.grad_thru_cache", "0/1: gradients through the caches"),
    ("-e", "--extra-steps", "optimizer.extra_steps", "constant-rate steps after the schedule"),
    ("-i", "--in-checkpoint-dir", "run.in_dir", "restore from here when out dir has none"),
    ("-o", "--out-checkpoint-dir", "run.out_dir", "checkpoints (and samples) go here"),
    ("-d", "--data-dir", "data.data_dir", "datasets dir: local path or gs://"),
    ("-v", "--vocab-path", "data.vocab_path", "SentencePiece model path"),
    ("-w", "--wandb-run-id", "run.wandb_run_id", "W&B run id to resume"),
    (None, "--dataset", "data.dataset", "enwik8, pg19, imagenet64, text or synthetic"),
    (None, "--steps", "optimizer.max_steps",
     "optimizer steps of the schedule (also caps optimizer.warmup_steps)"),
    (None, "--batch-size", "data.global_batch_size", "sequences per step over all processes"),
    (None, "--attention", "model.attention", "vq or full (quadratic baseline)"),
    (None, "--metrics-file", "run.metrics_file", "append JSON lines of logged metrics here"),
)


# W&B settings that the Helm chart and the launcher pass as environment variables.
ENV_FIELDS = {"WANDB_MODE": "run.wandb_mode", "WANDB_PROJECT": "run.wandb_project",
              "WANDB_RUN_ID": "run.wandb_run_id"}


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"tvq: error: {message} (see tvq --help)\n")


def make_parser() -> argparse.ArgumentParser:
    """The argument parser (one sub-command per original command)."""
    parser = _Parser(prog="tvq", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                     parser_class=_Parser)
    for name in COMMANDS:
        sub = commands.add_parser(name, help=f"run `{name}`")
        sub.add_argument("--preset", default=cfg.DEFAULT_PRESET,
                         help=f"one of {', '.join(cfg.PRESETS)}")
        sub.add_argument("--config", metavar="FILE.yaml", help="YAML file of config sections")
        sub.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                         help="override any config field (repeatable)")
        for short, long, key, text in FLAGS:
            names = (short, long) if short else (long,)
            sub.add_argument(*names, dest=key, metavar=key.split(".")[1].upper(),
                             help=f"{text} ({key})")
    return parser


def build_config(args: argparse.Namespace) -> cfg.Config:
    """The checked config from the parsed arguments (raises ConfigError)."""
    layers: list[dict[str, Any]] = []
    origins: list[str] = []
    if args.config:
        layers.append(cfg.load_yaml(args.config))
        origins.append(f"--config {args.config}")
    environment = {key: os.environ[var] for var, key in ENV_FIELDS.items() if os.environ.get(var)}
    flag_values = {key: getattr(args, key) for _, _, key, _ in FLAGS}
    for origin, values in (("environment", environment), ("flags", flag_values)):
        layer: dict[str, dict[str, Any]] = {}
        for key, value in values.items():
            if value is not None:
                section, name = key.split(".")
                layer.setdefault(section, {})[name] = value
        layers.append(layer)
        origins.append(origin)
    for assignment in args.set:
        layers.append(cfg.parse_set(assignment))
        origins.append(f"--set {assignment}")
    config = cfg.build(args.preset, layers, origins, checked=False)
    saved = saved_config.load(config.run)
    if saved is not None:  # the trained run's config, right above the preset
        config = cfg.build(args.preset, [saved[0], *layers], [saved[1], *origins],
                           checked=False)
    if args.__dict__["optimizer.max_steps"] is not None:
        warmup = min(config.optimizer.warmup_steps, config.optimizer.max_steps)
        config = dataclasses.replace(config, optimizer=dataclasses.replace(
            config.optimizer, warmup_steps=warmup))
    cfg.validate(config)
    return config


def run_command(command: str, config: cfg.Config) -> int:
    """Start JAX (multi-host from the environment) and run one command; return the exit code."""
    from tvq.distributed import initialize

    initialize(config.run)
    if command == "train-vocab":
        from tvq.data import train_vocab

        print(f"tvq: vocabulary written to {train_vocab(config)}")
        return 0
    config = _with_vocab_size(config)
    if command == "train":
        from tvq.train import NonFiniteLoss, Preempted, train

        try:
            train(config)
        except NonFiniteLoss as error:
            print(f"tvq: error: {error}", file=sys.stderr)
            return 1
        except Preempted as error:
            print(f"tvq: {error}", file=sys.stderr)
            return PREEMPTED_EXIT_CODE
    elif command in ("val", "test"):
        from tvq.evaluate import evaluate

        evaluate(config, "validation" if command == "val" else "test")
    else:
        from tvq.sample import sample

        for path in sample(config):
            print(f"tvq: sample written to {path}")
    return 0


def _with_vocab_size(config: cfg.Config) -> cfg.Config:
    """Set model.vocab_size from the dataset's vocabulary."""
    from tvq.data import load_vocab

    size = load_vocab(config).size
    return config if size == config.model.vocab_size else cfg.replace(
        config, model={"vocab_size": size})


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `tvq` command."""
    args = make_parser().parse_args(argv)
    try:
        config = build_config(args)
        from tvq.metrics import check_wandb

        check_wandb(config.run)
        return run_command(args.command, config)
    except cfg.ConfigError as error:
        print(f"tvq: error: {error}", file=sys.stderr)
        return 2


__all__ = ["COMMANDS", "PREEMPTED_EXIT_CODE", "FLAGS", "build_config", "main", "make_parser"]
