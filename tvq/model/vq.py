"""The learnable codebook: nearest-code quantization, straight-through keys, EMA surrogate loss."""

from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

CODEBOOK_PARAMS = ("c_sum", "c_count")  # names of the codebook's EMA statistics (params)


def sg(x: jax.Array) -> jax.Array:
    """Stop gradient."""
    return jax.lax.stop_gradient(x)


def st(x: jax.Array) -> jax.Array:
    """Zero in value, identity in gradient (the straight-through part of x)."""
    return x - sg(x)


def nearest_codes(k_BxHxLxK: jax.Array, codebook_HxSxK: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Index of the nearest code by squared distance, and that squared distance (>= 0)."""
    dist2_BxHxLxS = (
        jnp.sum(jnp.square(k_BxHxLxK), axis=-1, keepdims=True)
        - 2.0 * jnp.einsum("bhlk,hsk->bhls", k_BxHxLxK, codebook_HxSxK)
        + jnp.sum(jnp.square(codebook_HxSxK), axis=-1)[None, :, None, :]
    )
    z_BxHxL = jnp.argmin(dist2_BxHxLxS, axis=-1).astype(jnp.int32)
    err2_BxHxL = jax.nn.relu(jnp.min(dist2_BxHxLxS, axis=-1))
    return z_BxHxL, err2_BxHxL


def lookup(z_BxHxL: jax.Array, codebook_HxSxK: jax.Array) -> jax.Array:
    """The code vectors [B, H, L, K] for indices z."""
    batch = z_BxHxL.shape[0]
    index_BxHxLx1 = z_BxHxL[..., None]
    codes_BxHxSxK = jnp.broadcast_to(codebook_HxSxK[None], (batch, *codebook_HxSxK.shape))
    return jnp.take_along_axis(codes_BxHxSxK, index_BxHxLx1, axis=2)


def ema_targets(k_BxHxLxK: jax.Array, z_BxHxL: jax.Array, c_sum_HxSxK: jax.Array,
                c_count_HxS: jax.Array, c_gamma: float, n_block: int
                ) -> tuple[jax.Array, jax.Array]:
    """EMA targets of the codebook statistics from one block of keys.

    Statistics are summed over the block's positions, multiplied by the number of blocks in the
    update window (the caller averages the surrogate over blocks) and averaged over the batch, so
    that averaging over blocks, and over parts of the batch, gives the whole window's EMA target.
    """
    batch = k_BxHxLxK.shape[0]
    onehot_BxHxLxS = jax.nn.one_hot(z_BxHxL, c_count_HxS.shape[-1], dtype=jnp.float32)
    scale = n_block / batch
    sum_hat_HxSxK = scale * jnp.einsum("bhls,bhlk->hsk", onehot_BxHxLxS,
                                       k_BxHxLxK.astype(jnp.float32))
    count_hat_HxS = scale * jnp.sum(onehot_BxHxLxS, axis=(0, 2))
    sum_target = c_gamma * c_sum_HxSxK + (1.0 - c_gamma) * sum_hat_HxSxK
    count_target = c_gamma * c_count_HxS + (1.0 - c_gamma) * count_hat_HxS
    return sum_target, count_target


def surrogate_loss(c_sum: jax.Array, c_count: jax.Array, sum_target: jax.Array,
                   count_target: jax.Array) -> jax.Array:
    """Zero-valued loss whose gradient is (param - target): SGD at lr 1 lands on the target."""
    return (jnp.sum(sg(c_sum - sum_target) * st(c_sum))
            + jnp.sum(sg(c_count - count_target) * st(c_count)))


class Quantized(NamedTuple):
    """What the quantizer returns for one block of keys."""

    k_hat: jax.Array  # [B, H, L, K] code vectors in value, identity gradient to the keys
    z: jax.Array  # [B, H, L] int32 code indices
    l_commit: jax.Array  # scalar: mean over tokens of the squared error summed over heads
    l_codebook: jax.Array  # scalar surrogate for the EMA update of this block


class VectorQuantizer(nn.Module):
    """A codebook of n_code rows per head, learned by EMA (c_sum / c_count), used under sg."""

    n_head: int
    n_code: int
    d_k: int
    c_gamma: float

    def setup(self) -> None:
        self.c_sum = self.param("c_sum", nn.initializers.normal(self.d_k ** -0.25),
                                (self.n_head, self.n_code, self.d_k), jnp.float32)
        self.c_count = self.param("c_count", nn.initializers.ones, (self.n_head, self.n_code),
                                  jnp.float32)

    def codebook(self) -> jax.Array:
        """Current codes [H, S, K], stop-gradient (only the surrogate loss moves them)."""
        return sg(self.c_sum / jnp.clip(self.c_count, 0.01)[..., None])

    def __call__(self, k_BxHxLxK: jax.Array, n_block: int) -> Quantized:
        codebook = self.codebook()
        z, err2 = nearest_codes(k_BxHxLxK, codebook)
        k_hat = k_BxHxLxK + sg(lookup(z, codebook) - k_BxHxLxK)
        l_commit = jnp.mean(jnp.sum(err2, axis=1))
        targets = ema_targets(sg(k_BxHxLxK), z, self.c_sum, self.c_count, self.c_gamma, n_block)
        return Quantized(k_hat, z, l_commit, surrogate_loss(self.c_sum, self.c_count, *targets))
