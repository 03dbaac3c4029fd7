"""Sinusoidal position features and the Transformer-XL relative-position helpers."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def sinusoids(positions: jax.Array, width: int, lam: float) -> jax.Array:
    """Sin/cos features of `positions` (any shape): float32 [..., width], wavelengths up to lam."""
    inv_wavelengths = jnp.asarray(lam ** (-np.arange(0, width, 2) / width), jnp.float32)
    angles = jnp.einsum("...,f->...f", positions.astype(jnp.float32), inv_wavelengths)
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)[..., :width]


def relative_distances(q_len: int, k_len: int, first_query_slot: int) -> np.ndarray:
    """Distances [q_len, k_len] from query i (at key slot first_query_slot + i) to key slot j."""
    return (first_query_slot + np.arange(q_len))[:, None] - np.arange(k_len)[None, :]


def gather_by_distance(scores_BxHxLxD: jax.Array, dist_LxW: np.ndarray) -> jax.Array:
    """Pick scores[..., i, dist[i, j]] for every key j; distances outside [0, D) read 0 there."""
    n_dist = scores_BxHxLxD.shape[-1]
    index = np.clip(dist_LxW, 0, n_dist - 1)
    index = jnp.broadcast_to(index[None, None], (*scores_BxHxLxD.shape[:2], *index.shape))
    picked = jnp.take_along_axis(scores_BxHxLxD, index, axis=-1)
    inside = (dist_LxW >= 0) & (dist_LxW < n_dist)
    return jnp.where(inside[None, None], picked, jnp.zeros_like(picked))
