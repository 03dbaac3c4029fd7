"""Sampling: time per generated token as the context grows, recurrent VQ state vs a KV cache.

For each context length c the model first reads c tokens (in chunks), then generates tokens one
at a time with `tvq.sample.make_sample_step`, the step `tvq sample` runs; each step is timed on
its own and the median is reported. Series:
- `vq`: VQ attention as `tvq sample` runs it (the current block of model.block_len tokens is
  re-run for every new token, with the state of the completed blocks);
- `vq-block1`: VQ attention with model.block_len=1 (one query per step, as the original sampler);
- `full`: full attention with model.block_len=1 and a key/value cache holding the c context
  tokens (its cost grows with c).
All three share one set of parameters of the benchmark model.

    python -m bench.sampling --device-tag cpu-2core
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from bench import common

NAME = "sampling"
SERIES = ("vq", "vq-block1", "full")
LABELS = {"vq": "vq, tvq sample (block re-run per token)", "vq-block1": "vq, block_len 1",
          "full": "full attention + KV cache"}
DEFAULT_CONTEXTS = "1024,2048,4096,8192,16384,32768"
PREFILL_CHUNK = 1024  # context tokens read per call while building the state


def series_config(series: str, sets: list[str]) -> Any:
    """The checked config of one series (ConfigError on a bad --set)."""
    from tvq import config as cfg

    block_len = common.BENCH_MODEL["block_len"]
    layers: list[Any] = [{"model": common.BENCH_MODEL, "data": {
        "sequence_len": block_len, "update_len": block_len, "global_batch_size": 1}}]
    layers += [cfg.parse_set(assignment) for assignment in sets]
    if series != "vq":
        layers.append({"model": {"block_len": 1, "attention": "full" if series == "full"
                                 else "vq"}})
    return cfg.build("cpu", layers)


def make_reader(model: Any) -> Any:
    """A jitted (params, state, tokens_BxL) -> state that reads tokens into the state."""
    import jax

    return jax.jit(lambda p, s, x: model.apply({"params": p}, x, s, deterministic=True).state)


def prefill(reader: Any, params: Any, state: Any, context: int, vocab_size: int,
            chunk: int) -> Any:
    """The state after reading `context` random tokens, `chunk` tokens per call."""
    import numpy as np

    tokens = np.random.default_rng(1).integers(1, vocab_size, (1, context), dtype=np.int32)
    for start in range(0, context, chunk):
        state = reader(params, state, tokens[:, start:start + chunk])
    return common.block(state)


def time_decode(config: Any, params: Any, state: Any, context: int, tokens: int
                ) -> dict[str, Any]:
    """Median seconds of one `tvq sample` step right after `context` tokens."""
    import jax
    import jax.numpy as jnp

    from tvq.sample import SampleCarry, make_sample_step

    step = make_sample_step(config.model, config.run.p_nucleus, config.model.block_len)
    inputs = jnp.zeros((1, config.model.block_len), jnp.int32)
    carry = SampleCarry(state, inputs, jax.random.key(0))
    position = {"t": context}
    no_token, free = jnp.int32(0), jnp.bool_(False)

    def one_token() -> Any:
        nonlocal carry
        carry, token, _ = step(params, carry, jnp.int32(position["t"]), no_token, free)
        position["t"] += 1
        return token

    timing = common.median_seconds(one_token, warmup=2, repeats=tokens)
    return {**timing, "us_per_token": 1e6 * timing["median_s"]}


def run_series(series: str, params: Any, contexts: list[int], tokens: int,
               sets: list[str]) -> list[dict[str, Any]]:
    """One row per context length for one series."""
    from tvq.model import Transformer, initial_state

    config = series_config(series, sets)
    # VQ reads the context in whole blocks; its state does not depend on model.block_len.
    reading = series_config("vq", sets) if series.startswith("vq") else config
    reader = make_reader(Transformer(reading.model))
    rows = []
    for context in sorted(contexts):
        start = time.perf_counter()
        state = initial_state(config.model, 1, cache_len=context if series == "full" else 0)
        state = prefill(reader, params, state, context, config.model.vocab_size,
                        min(context, PREFILL_CHUNK))
        prefill_s = time.perf_counter() - start
        row = {"series": series, "context": context, "prefill_s": round(prefill_s, 2),
               **time_decode(config, params, state, context, tokens)}
        print(f"{series:>9} context={context:>6}: {row['us_per_token']:9.1f} us/token "
              f"(prefill {prefill_s:.1f} s)", flush=True)
        rows.append(row)
    return rows


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per series: time per token at the largest context over that at the smallest."""
    summary = {}
    for series in SERIES:
        found = {r["context"]: r["us_per_token"] for r in rows if r["series"] == series}
        if len(found) >= 2:
            small, large = min(found), max(found)
            summary[series] = {"small_context": small, "large_context": large,
                               "ratio": common.ratio(found[large], found[small])}
    return summary


def plot(rows: list[dict[str, Any]], out_dir: Path, tag: str) -> Path:
    """Time per generated token against context length, one line per series."""
    figure, (axis,) = common.new_figure(f"Sampling: time per token vs context ({tag})", 1)
    for series in SERIES:
        found = sorted((r["context"], r["us_per_token"]) for r in rows if r["series"] == series)
        if found:
            axis.plot(*zip(*found), "o-", label=LABELS[series])
    axis.set_xscale("log", base=2)
    axis.set_yscale("log")
    axis.set_xlabel("context length (tokens)")
    axis.set_ylabel("microseconds per generated token")
    axis.grid(True, alpha=0.3)
    axis.legend()
    return common.save_figure(figure, out_dir, NAME, tag)


def main(argv: list[str] | None = None) -> int:
    """Measure every series at every context and write sampling-TAG.json and .png."""
    parser = common.base_parser(NAME, __doc__.splitlines()[0])
    parser.add_argument("--contexts", type=common.size_list, default=DEFAULT_CONTEXTS,
                        help=f"context lengths (default: {DEFAULT_CONTEXTS})")
    parser.add_argument("--series", default=",".join(SERIES),
                        help=f"comma-separated, from: {', '.join(SERIES)}")
    parser.add_argument("--tokens", type=int, default=32,
                        help="generated tokens timed per context (default: 32)")
    common.add_set_option(parser, "the benchmark config", "model.n_layer=4")
    args = parser.parse_args(argv)
    series = _checked(parser.prog, args)
    import dataclasses

    import jax

    from tvq.model import Transformer
    from tvq.train import init_params

    machine = common.machine_info(args.device_tag)
    base = series_config("vq", args.set)
    params = jax.jit(lambda: init_params(base, Transformer(base.model), jax.random.key(0)))()
    rows = [row for name in series
            for row in run_series(name, params, args.contexts, args.tokens, args.set)]
    payload = {"benchmark": NAME, "machine": machine, "model": dataclasses.asdict(base.model),
               "tokens_timed": args.tokens, "rows": rows, "summary": summarize(rows)}
    print(common.write_result(args.out, NAME, args.device_tag, payload))
    print(plot(rows, args.out, args.device_tag))
    return 0


def _checked(prog: str, args: Any) -> list[str]:
    """The series to run; every bad option is one line and exit 2 before any compute."""
    from tvq.config import ConfigError

    series = [name for name in args.series.split(",") if name]
    if not series or set(series) - set(SERIES):
        common.fail(prog, f"--series: got {args.series!r}; allowed: a comma-separated subset of "
                    f"{', '.join(SERIES)}")
    if args.tokens < 1:
        common.fail(prog, f"--tokens: got {args.tokens}; allowed: an integer >= 1")
    try:
        block_len = series_config("vq", args.set).model.block_len
        for name in series:
            series_config(name, args.set)
    except ConfigError as error:
        common.fail(prog, str(error))
    uneven = [c for c in args.contexts if c % block_len or c % min(c, PREFILL_CHUNK)]
    if uneven:
        common.fail(prog, f"--contexts: got {uneven[0]}; allowed: multiples of model.block_len "
                    f"({block_len}) and, above {PREFILL_CHUNK}, of {PREFILL_CHUNK}")
    return series


if __name__ == "__main__":
    sys.exit(main())
