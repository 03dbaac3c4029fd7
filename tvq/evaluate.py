"""`tvq val` / `tvq test`: one pass over a split, carrying the recurrent state across windows.

Each sequence of `data.sequence_len` targets is fed as `data.update_len` windows; the model state
left by one window starts the next, exactly as in training. Inputs are the targets shifted right
with the pad id 0 as the first input, and pad targets (id 0) are masked out of every total.

Reported, besides the mean loss in nats per token:
- bits per byte (enwik8, text, synthetic): nats / ln 2 per byte. With a byte vocabulary every
  token is a byte; with a SentencePiece vocabulary the bytes are counted in the decoded text.
- word-level perplexity (pg19, as in the paper): exp(total nats / number of words), the words
  being the whitespace-separated words of the decoded target text.
- bits per dim (imagenet64): nats / ln 2 per subpixel token.
- loss_longrange (synthetic): the mean loss at the task's `predictable_mask` positions, the
  values only the compressed cache can predict (see tvq.data.synthetic).
Each process evaluates its own shard on its local devices; the totals are summed over processes.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
from typing import Any, Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from tvq.checkpoint import restore_params
from tvq.config import Config, ModelConfig
from tvq.data import load_vocab, make_eval_iterator
from tvq.data.synthetic import predictable_mask
from tvq.data.vocab import PAD_ID
from tvq.model import Transformer, initial_state
from tvq.train import init_params, shift_right

EVAL_PREFIX = "tvq-eval"


@dataclasses.dataclass
class EvalTotals:
    """Sums over the evaluated tokens (pad targets excluded)."""

    nats: float = 0.0  # summed negative log-likelihood
    tokens: int = 0  # non-pad target tokens
    words: int = 0  # whitespace-separated words of the decoded targets (pg19 only)
    text_bytes: int = 0  # UTF-8 bytes of the decoded targets (SentencePiece text only)
    longrange_nats: float = 0.0  # summed NLL at the long-range positions (synthetic only)
    longrange_tokens: int = 0  # non-pad targets at the long-range positions

    def add(self, other: EvalTotals) -> None:
        """Accumulate `other` into these totals."""
        for name in ("nats", "tokens", "words", "text_bytes", "longrange_nats",
                     "longrange_tokens"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


@functools.lru_cache(maxsize=8)
def make_sequence_nll(model_config: ModelConfig, update_len: int
                      ) -> Callable[[Any, jax.Array, jax.Array], jax.Array]:
    """A jitted function (params, targets_BxT, longrange_T) -> [4] f32: summed NLL and count of
    non-pad targets, then the same over the positions where the bool longrange_T is set.

    The sequence is cut into update_len windows that run one after another (lax.scan), each
    starting from the state the previous window left, as training does. Cached per config, so
    repeated passes compile once.
    """
    model = Transformer(model_config)

    def sequence_nll(params: Any, targets_BxT: jax.Array, longrange_T: jax.Array) -> jax.Array:
        batch, length = targets_BxT.shape
        n_window = length // update_len

        def windows(x_BxT: jax.Array) -> jax.Array:
            return x_BxT.reshape(len(x_BxT), n_window, update_len).transpose(1, 0, 2)

        def window(state: Any, io: tuple[jax.Array, jax.Array, jax.Array]
                   ) -> tuple[Any, jax.Array]:
            inputs_BxU, targets_BxU, longrange_1xU = io
            out = model.apply({"params": params}, inputs_BxU, state, deterministic=True)
            nll_BxU = optax.softmax_cross_entropy_with_integer_labels(
                out.logits.astype(jnp.float32), targets_BxU)
            mask_BxU = (targets_BxU != PAD_ID).astype(jnp.float32)
            longrange_BxU = mask_BxU * longrange_1xU
            return out.state, jnp.stack([jnp.sum(nll_BxU * mask_BxU), jnp.sum(mask_BxU),
                                         jnp.sum(nll_BxU * longrange_BxU),
                                         jnp.sum(longrange_BxU)])

        state = initial_state(model_config, batch)
        inputs = shift_right(targets_BxT)
        longrange_1xT = longrange_T.astype(jnp.float32)[None, :]
        _, sums_Wx4 = jax.lax.scan(window, state, (windows(inputs), windows(targets_BxT),
                                                   windows(longrange_1xT)))
        return jnp.sum(sums_Wx4, axis=0)

    return jax.jit(sequence_nll)


def local_mesh() -> Mesh:
    """A one-axis ("data") mesh over this process's own devices."""
    return Mesh(np.array(jax.local_devices()), ("data",))


def to_local_devices(tree: Any, mesh: Mesh) -> Any:
    """Replicate a pytree on `mesh`, gathering arrays that other processes hold parts of."""

    def local(leaf: Any) -> Any:
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            leaf = multihost_utils.process_allgather(leaf, tiled=True)
        return jax.device_put(leaf, NamedSharding(mesh, PartitionSpec()))

    return jax.tree.map(local, tree)


def _batch_sharding(mesh: Mesh, batch: int) -> NamedSharding:
    """Split the batch over the local devices when it divides evenly, else replicate."""
    split = batch % mesh.devices.size == 0
    return NamedSharding(mesh, PartitionSpec("data" if split else None))


def longrange_mask(config: Config) -> np.ndarray:
    """bool [sequence_len]: the positions reported as loss_longrange (the synthetic task's
    `predictable_mask`; none for the other datasets)."""
    if config.data.dataset == "synthetic":
        return predictable_mask(config)
    return np.zeros(config.data.sequence_len, bool)


def evaluate_batches(config: Config, params: Any, batches: Iterable[np.ndarray],
                     vocab: Any) -> EvalTotals:
    """Totals over all `batches` of targets [local_batch, sequence_len]."""
    mesh = local_mesh()
    params = to_local_devices(params, mesh)
    sequence_nll = make_sequence_nll(config.model, config.data.update_len)
    longrange = jax.device_put(longrange_mask(config), NamedSharding(mesh, PartitionSpec()))
    totals = EvalTotals()
    for targets in batches:
        targets = np.asarray(targets, dtype=np.int32)
        sums = sequence_nll(params, jax.device_put(targets, _batch_sharding(mesh, len(targets))),
                            longrange)
        nats, tokens, longrange_nats, longrange_tokens = np.asarray(sums, dtype=np.float64)
        totals.add(EvalTotals(nats=float(nats), tokens=int(tokens),
                              longrange_nats=float(longrange_nats),
                              longrange_tokens=int(longrange_tokens),
                              **_text_counts(config, targets, vocab)))
    return totals


def _text_counts(config: Config, targets: np.ndarray, vocab: Any) -> dict[str, int]:
    """Words (pg19) or UTF-8 bytes (text with a SentencePiece vocabulary) of decoded targets."""
    dataset = config.data.dataset
    if dataset != "pg19" and not (dataset == "text" and config.data.vocab_path):
        return {}
    texts = [vocab.decode([int(t) for t in row if t != PAD_ID]) for row in targets]
    if dataset == "pg19":
        return {"words": sum(len(text.split()) for text in texts)}
    return {"text_bytes": sum(len(text.encode("utf-8")) for text in texts)}


def sum_over_processes(totals: EvalTotals) -> EvalTotals:
    """The totals of all processes (each process evaluated its own shard)."""
    if jax.process_count() == 1:
        return totals
    # JAX moves 32-bit values: counts stay exact (int32), nats keep float32 precision.
    nats_Px2, counts_Px4 = multihost_utils.process_allgather(
        (np.array([totals.nats, totals.longrange_nats], np.float32),
         np.array([totals.tokens, totals.words, totals.text_bytes, totals.longrange_tokens],
                  np.int32)))
    nats, longrange_nats = (float(n) for n in np.asarray(nats_Px2, np.float64).sum(axis=0))
    tokens, words, text_bytes, longrange_tokens = (
        int(n) for n in np.asarray(counts_Px4, np.int64).sum(axis=0))
    return EvalTotals(nats, tokens, words, text_bytes, longrange_nats, longrange_tokens)


def summarize(config: Config, split: str, totals: EvalTotals, step: int) -> dict[str, Any]:
    """The result dict: split, loss (nats/token), bpb | ppl | bpd, loss_longrange (synthetic),
    tokens, step."""
    if totals.tokens == 0:
        raise ValueError(f"{split}: no non-pad target tokens were evaluated")
    loss = totals.nats / totals.tokens
    dataset = config.data.dataset
    summary: dict[str, Any] = {"split": split, "loss": loss}
    if dataset == "pg19":
        if totals.words == 0:
            raise ValueError(f"{split}: the decoded targets contain no words")
        summary["ppl"] = math.exp(totals.nats / totals.words)
    elif dataset == "imagenet64":
        summary["bpd"] = loss / math.log(2)
    elif totals.text_bytes:
        summary["bpb"] = totals.nats / (totals.text_bytes * math.log(2))
    else:
        summary["bpb"] = loss / math.log(2)
    if totals.longrange_tokens:
        summary["loss_longrange"] = totals.longrange_nats / totals.longrange_tokens
    summary.update(tokens=totals.tokens, step=step)
    return summary


def report(summary: dict[str, Any], metrics_file: str) -> None:
    """On process 0: print the summary as one `tvq-eval key=value ...` line and, with a metrics
    file, append it there as one JSON line."""
    if jax.process_index() != 0:
        return
    print(" ".join([EVAL_PREFIX, *(f"{key}={value:.6g}" if isinstance(value, float)
                                   else f"{key}={value}" for key, value in summary.items())]),
          flush=True)
    if metrics_file:
        os.makedirs(os.path.dirname(os.path.abspath(metrics_file)), exist_ok=True)
        with open(metrics_file, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(summary) + "\n")


def restore_model(config: Config) -> tuple[Any, int]:
    """The parameters restored from the run's checkpoint, and the checkpoint step."""
    model = Transformer(config.model)
    abstract = jax.eval_shape(lambda: init_params(config, model, jax.random.PRNGKey(0)))
    params, step = restore_params(config, abstract)
    return params, int(step)


def evaluate(config: Config, split: str) -> dict[str, Any]:
    """Evaluate the run's checkpoint on `split` ("validation" or "test") and report the result."""
    vocab = load_vocab(config)
    batches = make_eval_iterator(config, split, jax.process_index(), jax.process_count())
    params, step = restore_model(config)
    totals = sum_over_processes(evaluate_batches(config, params, batches, vocab))
    summary = summarize(config, split, totals, step)
    report(summary, config.run.metrics_file)
    return summary
