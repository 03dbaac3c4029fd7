"""The quadratic peer: tvq's layer layout with `jax.nn.dot_product_attention` as attention.

Same width and depth as a tvq model of the same ModelConfig (embedding, 2 x n_layer gated
attention units of widths d_k / d_v, output projection), but plain causal softmax attention over
the whole sequence, computed the way JAX computes it on this backend. No relative-position
biases and no codebook: it is a speed and memory reference, not a model to train.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from tvq.config import ConfigError, ModelConfig


def check_config(config: ModelConfig) -> None:
    """The peer's one extra rule; ConfigError with one line when it is broken."""
    if config.d_v != config.d_k:
        raise ConfigError(f"model.d_v: got {config.d_v}; allowed for the quadratic peer: equal "
                          f"to model.d_k ({config.d_k}), as jax.nn.dot_product_attention takes "
                          "one head width")


class GatedAttentionUnit(nn.Module):
    """One pre-norm single-head gated attention unit with causal softmax attention."""

    config: ModelConfig

    @nn.compact
    def __call__(self, x_BxLxD: jax.Array) -> jax.Array:
        c = self.config
        dtype = jnp.dtype(c.dtype)
        h = nn.LayerNorm(dtype=dtype)(x_BxLxD)
        qkvg = nn.Dense(2 * c.d_k + 2 * c.d_v, use_bias=False, dtype=dtype)(h)
        q, k, v, g = jnp.split(qkvg, [c.d_k, 2 * c.d_k, 2 * c.d_k + c.d_v], axis=-1)
        v, g = jax.nn.silu(v), jax.nn.silu(g)
        # [B, L, heads=1, width]: one head, as in tvq's single-head units.
        out = jax.nn.dot_product_attention(q[:, :, None], k[:, :, None], v[:, :, None],
                                           is_causal=True)[:, :, 0]
        return x_BxLxD + nn.Dense(c.d_model, use_bias=False, dtype=dtype)(out * g)


class PeerOutput(NamedTuple):
    """What tvq's Transformer returns, so that tvq's own train step runs the peer unchanged."""

    logits: jax.Array
    state: Any
    l_commit: jax.Array
    l_codebook: jax.Array


class QuadraticPeer(nn.Module):
    """Embedding -> 2 * n_layer gated attention units -> logits; tvq's call signature.

    `state` is passed through untouched (there is no recurrence: the whole window is attended
    at once) and the codebook losses are zero.
    """

    config: ModelConfig

    @nn.compact
    def __call__(self, inputs_BxL: jax.Array, state: Any, deterministic: bool = True) -> PeerOutput:
        c = self.config
        check_config(c)
        x = nn.Embed(c.vocab_size, c.d_model)(inputs_BxL).astype(c.dtype)
        for _ in range(2 * c.n_layer):
            x = GatedAttentionUnit(c)(x)
        x = nn.LayerNorm(dtype=c.dtype)(x)
        logits = nn.Dense(c.vocab_size, use_bias=False)(x).astype(jnp.float32)
        zero = jnp.zeros((), jnp.float32)
        return PeerOutput(logits, state, zero, zero)
