"""Attention scaling: time per token and peak memory of a whole training step against length T.

Three models of equal width and depth run tvq's own train step (loss + gradients + optimizer
update, `tvq.train.make_train_step`) on one sequence of T tokens (sequence_len = update_len = T):
- `vq`: tvq's Transformer with VQ attention (block-recurrent, linear in T);
- `full`: the same Transformer with `model.attention=full` (quadratic, same parameters);
- `peer`: the quadratic peer of `bench/peer.py` (`jax.nn.dot_product_attention`).
Each (variant, T) runs in a fresh subprocess. XLA's compiled memory estimate is checked against
the memory available before anything runs; a size that would not fit is recorded as out of memory
and larger sizes of that variant are skipped.

    python -m bench.attention_scaling --device-tag cpu-2core
"""

from __future__ import annotations

import sys
import time
from typing import Any

from bench import common

NAME = "attention_scaling"
VARIANTS = ("vq", "full", "peer")
DEFAULT_LENGTHS = "1024,2048,4096,8192,16384,32768"
MEMORY_FRACTION = 0.8  # of the memory available when a worker starts
SLOW_STEP_S = 20.0  # a first step this slow is the measurement (no repeats)


def bench_config(variant: str, seq_len: int, batch: int, sets: list[str]) -> Any:
    """The checked run config of one measurement (ConfigError on a bad --set or length)."""
    from tvq import config as cfg

    layers: list[Any] = [{"model": common.BENCH_MODEL}]
    layers += [cfg.parse_set(assignment) for assignment in sets]
    layers.append({"model": {"attention": "full" if variant == "full" else "vq"},
                   "data": {"sequence_len": seq_len, "update_len": seq_len,
                            "global_batch_size": batch}})
    return cfg.build("cpu", layers)


def _model(variant: str, config: Any) -> tuple[Any, Any]:
    """The model and a function params -> codebook mask (True on codebook leaves)."""
    import jax

    if variant == "peer":
        from bench.peer import QuadraticPeer

        return QuadraticPeer(config.model), lambda params: jax.tree.map(lambda _: False, params)
    from tvq.model import Transformer, codebook_mask

    return Transformer(config.model), codebook_mask


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """Compile one variant at one length, check it fits, then time its train step."""
    import jax
    import numpy as np

    from tvq.optim import make_optimizer
    from tvq.train import init_params, make_init_state, make_train_step

    config = bench_config(spec["variant"], spec["seq_len"], spec["batch"], spec["sets"])
    model, codebook_of = _model(spec["variant"], config)
    codebook = codebook_of(jax.eval_shape(
        lambda: init_params(config, model, jax.random.PRNGKey(0))))
    tx = make_optimizer(config.optimizer, codebook)
    state = jax.jit(make_init_state(config, model, tx))()
    targets = np.random.default_rng(0).integers(
        1, config.model.vocab_size, (spec["batch"], spec["seq_len"]), dtype=np.int32)
    # Measured before compiling, which can itself take memory (constant folding).
    budget = (spec["memory_budget_bytes"]
              or int(MEMORY_FRACTION * common.available_memory_bytes()))
    start = time.perf_counter()
    step = jax.jit(make_train_step(config, model, tx, codebook), donate_argnums=0)
    compiled = step.lower(state, targets).compile()
    result: dict[str, Any] = {"compile_s": round(time.perf_counter() - start, 2),
                              "compiled_bytes": common.compiled_bytes(compiled)}
    if result["compiled_bytes"] > budget:
        return {**result, "status": "out of memory (compiled estimate)", "budget_bytes": budget}
    holder = {"state": state}

    def one_step() -> Any:
        holder["state"], holder["metrics"] = compiled(holder["state"], targets)
        return holder["metrics"]

    timing = common.median_seconds(one_step, warmup=1, repeats=spec["repeats"],
                                   enough_s=SLOW_STEP_S)
    tokens = spec["batch"] * spec["seq_len"]
    loss = float(jax.device_get(holder["metrics"])["loss"])
    return {**result, **timing, "status": "ok", "loss": loss,
            "us_per_token": 1e6 * timing["median_s"] / tokens,
            "tokens_per_s": tokens / timing["median_s"],
            "peak_bytes": common.measured_peak_bytes()}


def run_sweep(lengths: list[int], variants: list[str], batch: int, repeats: int,
              sets: list[str], timeout_s: float, memory_budget_bytes: int | None = None
              ) -> list[dict[str, Any]]:
    """Measure every variant at every length (smallest first); stop a variant once it fails.

    memory_budget_bytes: the most a step may need by XLA's estimate (default: 80% of the memory
    available when each measurement starts).
    """
    rows: list[dict[str, Any]] = []
    stopped: dict[str, str] = {}
    for seq_len in sorted(lengths):
        for variant in variants:
            spec = {"variant": variant, "seq_len": seq_len, "batch": batch, "repeats": repeats,
                    "sets": sets, "memory_budget_bytes": memory_budget_bytes}
            if variant in stopped:
                row = {**spec, "status": f"skipped ({stopped[variant]} at a smaller T)"}
            else:
                row = common.run_worker(f"bench.{NAME}", spec, timeout_s)
                if row["status"] != "ok":
                    stopped[variant] = row["status"]
            print(_row_line(row), flush=True)
            rows.append(row)
    return rows


def _row_line(row: dict[str, Any]) -> str:
    if row["status"] != "ok":
        return f"{row['variant']:>5} T={row['seq_len']:>6}: {row['status']}"
    return (f"{row['variant']:>5} T={row['seq_len']:>6}: {row['us_per_token']:9.1f} us/token "
            f"{row['median_s']:8.3f} s/step  peak {row['peak_bytes'] / common.GIB:6.2f} GiB "
            f"(compiled {row['compiled_bytes'] / common.GIB:6.2f} GiB)")


def _ok(rows: list[dict[str, Any]], variant: str) -> dict[int, dict[str, Any]]:
    return {r["seq_len"]: r for r in rows if r["variant"] == variant and r["status"] == "ok"}


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Ratios the targets are stated in: vq's time per token at the largest vs the smallest T,
    speed-ups of vq over full and over the peer at each T, and memory growth per token."""
    vq, full, peer = (_ok(rows, v) for v in VARIANTS)
    lengths = sorted({r["seq_len"] for r in rows})
    summary: dict[str, Any] = {"per_length": []}
    for seq_len in lengths:
        base = vq.get(seq_len, {}).get("median_s")
        summary["per_length"].append({
            "seq_len": seq_len,
            "speedup_vs_peer": common.ratio(peer.get(seq_len, {}).get("median_s"), base),
            "speedup_vs_full": common.ratio(full.get(seq_len, {}).get("median_s"), base),
        })
    if len(vq) >= 2:
        small, large = min(vq), max(vq)
        summary["vq_time_per_token_largest_over_smallest"] = {
            "small_T": small, "large_T": large,
            "ratio": common.ratio(vq[large]["us_per_token"], vq[small]["us_per_token"])}
    for key in ("compiled_bytes", "peak_bytes"):
        summary[f"marginal_{key}_per_token"] = {
            name: _marginal(found, key) for name, found in zip(VARIANTS, (vq, full, peer))}
    ran_out = {name: min((r["seq_len"] for r in rows if r["variant"] == name
                          and r["status"] != "ok"), default=None) for name in VARIANTS}
    summary["first_T_not_run"] = ran_out
    return summary


def _marginal(found: dict[int, dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """Memory added per extra token between consecutive lengths: flat means linear in T."""
    lengths = sorted(found)
    return [{"from_T": a, "to_T": b,
             "bytes_per_token": round((found[b][key] - found[a][key]) / (b - a))}
            for a, b in zip(lengths, lengths[1:])]


def plot(rows: list[dict[str, Any]], out_dir: Any, tag: str) -> Any:
    """Time per token, peak memory and speed-up of vq against T, one panel each."""
    figure, (time_ax, mem_ax, speed_ax) = common.new_figure(
        f"Training step vs sequence length T ({tag})", ncols=3)
    labels = {"vq": "tvq vq", "full": "tvq full", "peer": "peer (jax.nn.dot_product_attention)"}
    for variant in VARIANTS:
        found = _ok(rows, variant)
        if not found:
            continue
        lengths = sorted(found)
        time_ax.plot(lengths, [found[t]["us_per_token"] for t in lengths], "o-",
                     label=labels[variant])
        mem_ax.plot(lengths, [found[t]["peak_bytes"] / common.GIB for t in lengths], "o-",
                    label=labels[variant])
        if variant != "vq":
            vq = _ok(rows, "vq")
            both = [t for t in lengths if t in vq]
            speed_ax.plot(both, [found[t]["median_s"] / vq[t]["median_s"] for t in both], "o-",
                          label=f"{labels[variant]} / vq")
    for axis, ylabel in ((time_ax, "microseconds per token"), (mem_ax, "peak memory (GiB)"),
                         (speed_ax, "step time ratio (x faster)")):
        axis.set_xscale("log", base=2)
        axis.set_xlabel("sequence length T (tokens)")
        axis.set_ylabel(ylabel)
        axis.grid(True, alpha=0.3)
        if axis.lines:
            axis.legend(fontsize=8)
    time_ax.set_yscale("log")
    return common.save_figure(figure, out_dir, NAME, tag)


def main(argv: list[str] | None = None) -> int:
    """Run the sweep and write attention_scaling-TAG.json and .png."""
    argv = sys.argv[1:] if argv is None else argv
    if common.worker_main(measure, argv):
        return 0
    parser = common.base_parser(NAME, __doc__.splitlines()[0])
    parser.add_argument("--lengths", type=common.size_list, default=DEFAULT_LENGTHS,
                        help=f"sequence lengths T (default: {DEFAULT_LENGTHS})")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"comma-separated, from: {', '.join(VARIANTS)}")
    parser.add_argument("--batch", type=int, default=1, help="sequences per step (default: 1)")
    parser.add_argument("--repeats", type=int, default=2, help="timed steps (default: 2)")
    parser.add_argument("--timeout-s", type=float, default=900.0,
                        help="give up on one measurement after this long (default: 900)")
    parser.add_argument("--memory-budget-gib", type=float,
                        help="most memory a step may need by XLA's estimate (default: "
                        f"{MEMORY_FRACTION * 100:.0f}%% of the memory available)")
    common.add_set_option(parser, "the benchmark config", "model.n_layer=4")
    args = parser.parse_args(argv)
    variants = [v for v in args.variants.split(",") if v]
    if not variants or set(variants) - set(VARIANTS):
        common.fail(parser.prog, f"--variants: got {args.variants!r}; allowed: a comma-separated "
                    f"subset of {', '.join(VARIANTS)}")
    for option, value in (("--batch", args.batch), ("--repeats", args.repeats)):
        if value < 1:
            common.fail(parser.prog, f"{option}: got {value}; allowed: an integer >= 1")
    if args.memory_budget_gib is not None and args.memory_budget_gib <= 0:
        common.fail(parser.prog, f"--memory-budget-gib: got {args.memory_budget_gib}; allowed: "
                    "a number > 0")
    budget = None if args.memory_budget_gib is None else int(args.memory_budget_gib * common.GIB)
    _check_configs(parser.prog, args.lengths, variants, args.batch, args.set)
    machine = common.machine_info(args.device_tag)
    rows = run_sweep(args.lengths, variants, args.batch, args.repeats, args.set, args.timeout_s,
                     budget)
    payload = {"benchmark": NAME, "machine": machine,
               "model": _model_fields(args.lengths[0], args.set),
               "batch": args.batch, "rows": rows, "summary": summarize(rows)}
    print(common.write_result(args.out, NAME, args.device_tag, payload))
    print(plot(rows, args.out, args.device_tag))
    return 1 if any(row["status"] == "failed" for row in rows) else 0


def _check_configs(prog: str, lengths: list[int], variants: list[str], batch: int,
                   sets: list[str]) -> None:
    """Every requested config is valid, or one line and exit 2 before any compute."""
    from bench.peer import check_config as check_peer_config
    from tvq.config import ConfigError

    try:
        for seq_len in lengths:
            for variant in variants:
                config = bench_config(variant, seq_len, batch, sets)
                if variant == "peer":
                    check_peer_config(config.model)
    except ConfigError as error:
        common.fail(prog, str(error))


def _model_fields(seq_len: int, sets: list[str]) -> dict[str, Any]:
    import dataclasses

    return dataclasses.asdict(bench_config("vq", seq_len, 1, sets).model)


if __name__ == "__main__":
    sys.exit(main())
