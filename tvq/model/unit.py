"""The gated attention unit (one head by default) and its small building blocks."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from tvq.config import ModelConfig
from tvq.model.attention import RelativeBias, full_attention, vq_attention
from tvq.model.position import sinusoids
from tvq.model.vq import VectorQuantizer

KERNEL_INIT = nn.initializers.variance_scaling(1.0, "fan_in", "normal")


def rms_normalize(x: jax.Array, eps: float = 1e-6) -> jax.Array:
    """x / rms(x) over the last axis, in float32, without gain or bias."""
    x = x.astype(jnp.float32)
    return x * jax.lax.rsqrt(eps + jnp.mean(jnp.square(x), axis=-1, keepdims=True))


def keep_scale(key: jax.Array | None, rate: float, shape: tuple[int, ...]) -> jax.Array | None:
    """Inverted-dropout multipliers (0 or 1/(1-rate)) from an explicit key; None when inactive."""
    if key is None or rate == 0.0:
        return None
    return jax.random.bernoulli(key, 1.0 - rate, shape).astype(jnp.float32) / (1.0 - rate)


def with_rank(vector: jax.Array, ndim: int) -> jax.Array:
    """Reshape a [D] parameter to [1, ..., 1, D] so it broadcasts without rank promotion."""
    return jnp.reshape(vector, (1,) * (ndim - 1) + vector.shape)


class RMSNorm(nn.Module):
    """RMS layer norm with gain and bias (no centering), computed in float32."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        gain = self.param("g", nn.initializers.ones, (x.shape[-1],), jnp.float32)
        bias = self.param("b", nn.initializers.zeros, (x.shape[-1],), jnp.float32)
        y = rms_normalize(x) * with_rank(gain, x.ndim) + with_rank(bias, x.ndim)
        return y.astype(x.dtype)


class FeedForward(nn.Module):
    """Optional MLP residual branch (d_ff > 0): norm, dense, squared ReLU, dense."""

    config: ModelConfig

    @nn.compact
    def __call__(self, x_BxLxD: jax.Array) -> jax.Array:
        cfg = self.config
        dense = dict(use_bias=False, kernel_init=KERNEL_INIT, dtype=cfg.dtype)
        h = nn.Dense(cfg.d_ff, **dense)(RMSNorm()(x_BxLxD))
        return nn.Dense(cfg.d_model, **dense)(jnp.square(jax.nn.relu(h)))


class GatedAttentionUnit(nn.Module):
    """Pre-norm gated attention unit: output = res_proj(attention(q, k, v) * gate).

    Queries and keys are RMS-normalized without gain or bias and scaled by d_k^-1/4; one
    projection gives keys, values and gates (SiLU on values and gates). In "vq" mode keys are
    quantized and attention runs over the block and its caches; in "full" mode over the cache and
    the whole input with unquantized keys. Returns (residual, new cache, l_commit, l_codebook).
    """

    config: ModelConfig
    n_block: int  # blocks in the caller's update window (scales the codebook statistics)
    deterministic: bool

    def setup(self) -> None:
        cfg = self.config
        dense = dict(use_bias=False, kernel_init=KERNEL_INIT, dtype=cfg.dtype)
        self.input_norm = RMSNorm()
        self.q_proj = nn.Dense(cfg.n_head * cfg.d_k, **dense)
        self.kvg_proj = nn.Dense(cfg.n_head * (cfg.d_k + 2 * cfg.d_v), **dense)
        self.r_proj = nn.Dense(cfg.n_head * cfg.d_k, use_bias=False, kernel_init=KERNEL_INIT)
        self.res_proj = nn.Dense(cfg.d_model, **dense)
        self.xl_u = self.param("xl_u", nn.initializers.zeros, (cfg.n_head, cfg.d_k), jnp.float32)
        self.xl_v = self.param("xl_v", nn.initializers.zeros, (cfg.n_head, cfg.d_k), jnp.float32)
        self.quantizer = VectorQuantizer(cfg.n_head, cfg.n_code, cfg.d_k, cfg.c_gamma)
        self.dropres = nn.Dropout(cfg.p_dropres)

    def heads(self, x_BxLxF: jax.Array, width: int) -> jax.Array:
        """[B, L, H*width] -> [B, H, L, width]."""
        batch, length = x_BxLxF.shape[:2]
        return jnp.transpose(x_BxLxF.reshape(batch, length, self.config.n_head, width),
                             (0, 2, 1, 3))

    def project(self, x_BxLxD: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
        """Queries and keys [B, H, L, K] (float32), values [B, H, L, V] and gates [B, L, H*V]."""
        cfg = self.config
        scale = cfg.d_k ** -0.25
        x_tilde = self.input_norm(x_BxLxD)
        q = rms_normalize(self.heads(self.q_proj(x_tilde), cfg.d_k)) * scale
        k, v, gate = jnp.split(self.kvg_proj(x_tilde),
                               np.cumsum([cfg.n_head * cfg.d_k, cfg.n_head * cfg.d_v]), axis=-1)
        k = rms_normalize(self.heads(k, cfg.d_k)) * scale
        return q, k, self.heads(jax.nn.silu(v), cfg.d_v), jax.nn.silu(gate)

    def relative_bias(self, n_dist: int, sin_key: jax.Array | None = None) -> RelativeBias:
        """XL biases for distances 0..n_dist-1; sinusoids dropped with a mask fixed per call."""
        cfg = self.config
        scale = cfg.d_k ** -0.25
        table = sinusoids(jnp.arange(n_dist), cfg.d_model, cfg.pe_lam)
        mask = keep_scale(sin_key, cfg.p_dropsin, table.shape)
        r = self.r_proj(table if mask is None else table * mask).astype(jnp.float32)
        return RelativeBias(self.xl_u[None, :, None, :] * scale,
                            self.xl_v[None, :, None, :] * scale,
                            r.reshape(n_dist, cfg.n_head, cfg.d_k) * scale)

    def output(self, out_BxHxLxV: jax.Array, gate_BxLxF: jax.Array) -> jax.Array:
        """The residual branch [B, L, D] from attention outputs and gates."""
        batch, _, length, _ = out_BxHxLxV.shape
        out_BxLxF = jnp.transpose(out_BxHxLxV, (0, 2, 1, 3)).reshape(batch, length, -1)
        res = self.res_proj(out_BxLxF.astype(gate_BxLxF.dtype) * gate_BxLxF)
        return self.dropres(res, deterministic=self.deterministic)

    def __call__(self, x_BxLxD: jax.Array, cache: dict[str, jax.Array], pos_B: jax.Array,
                 sin_key: jax.Array | None = None
                 ) -> tuple[jax.Array, dict[str, jax.Array], jax.Array, jax.Array]:
        cfg = self.config
        q, k, v, gate = self.project(x_BxLxD)
        quantized = self.quantizer(k, self.n_block)
        if cfg.attention == "vq":
            rel = self.relative_bias(cfg.mem_len + 1, sin_key)
            out, new_cache = vq_attention(q, quantized.k_hat, quantized.z, v, cache, pos_B,
                                          self.quantizer.codebook(), rel, cfg.agg_cache)
            l_commit = quantized.l_commit
        else:
            rel = self.relative_bias(cache["k"].shape[2] + x_BxLxD.shape[1], sin_key)
            out, new_cache = full_attention(q, k, v, cache, pos_B, rel)
            l_commit = jnp.zeros((), jnp.float32)
        if not cfg.grad_thru_cache:
            new_cache = jax.lax.stop_gradient(new_cache)
        return self.output(out, gate), new_cache, l_commit, quantized.l_codebook
