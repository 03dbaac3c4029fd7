"""Attention math for one block of queries: block-recurrent VQ attention and the full baseline.

Shapes: B batch, H heads, L queries in the block, K key width, V value width, S codes,
M uncompressed cache length (mem_len), C full-attention cache capacity, W keys in the window.
Positions: query i of the block sits at absolute position pos + i; cache slot j of n slots at
pos - n + j. Slots at negative positions (a fresh state) are masked, never attended as zeros.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from tvq.model.position import gather_by_distance, relative_distances
from tvq.model.vq import sg

NEG_INF = -1e30  # stands in for minus infinity in masked scores


class RelativeBias(NamedTuple):
    """Transformer-XL biases, already scaled: u (content), v (position), r[d] for distance d."""

    u_1xHx1xK: jax.Array
    v_1xHx1xK: jax.Array
    r_DxHxK: jax.Array


def slots_valid(pos_B: jax.Array, n_cache: int, n_slots: int) -> jax.Array:
    """Whether each of the window's slots [B, n_slots] holds a real token (position >= 0)."""
    return (pos_B[:, None] - n_cache + jnp.arange(n_slots)[None, :]) >= 0


def window_scores(q_BxHxLxK: jax.Array, keys_BxHxWxK: jax.Array, rel: RelativeBias,
                  dist_LxW: np.ndarray, keep_BxLxW: jax.Array,
                  far_content_BxHxLxW: jax.Array | None = None) -> jax.Array:
    """Scores [B, H, L, W]: content plus the relative bias of the key's distance; masked to NEG_INF.

    Distances with no row in rel.r (beyond its range) get content-only scores, taken from
    far_content when given.
    """
    content = jnp.einsum("bhlk,bhwk->bhlw", q_BxHxLxK + rel.u_1xHx1xK, keys_BxHxWxK)
    if far_content_BxHxLxW is not None:
        near = (dist_LxW < rel.r_DxHxK.shape[0])[None, None]
        content = jnp.where(near, content, far_content_BxHxLxW)
    by_distance = jnp.einsum("bhlk,dhk->bhld", q_BxHxLxK + rel.v_1xHx1xK, rel.r_DxHxK)
    scores = content + gather_by_distance(by_distance, dist_LxW)
    return jnp.where(keep_BxLxW[:, None], scores, NEG_INF)


def mix(parts: list[tuple[jax.Array, jax.Array]]) -> jax.Array:
    """One softmax over several (scores [B,H,L,N], values [B,H,N,V]) parts: [B, H, L, V].

    The max score is subtracted and weights are normalized before they multiply the values.
    """
    top = sg(jnp.max(jnp.stack([jnp.max(s, axis=-1) for s, _ in parts]), axis=0))[..., None]
    weights = [jnp.exp(scores - top) for scores, _ in parts]
    total = sum(jnp.sum(w, axis=-1, keepdims=True) for w in weights)
    return sum(jnp.einsum("bhln,bhnv->bhlv", (w / total).astype(values.dtype), values)
               for w, (_, values) in zip(weights, parts))


def count_biases(count_BxHxS: jax.Array) -> jax.Array:
    """log(count) per code, NEG_INF for codes with nothing aggregated yet."""
    return jnp.where(count_BxHxS > 0, jnp.log(jnp.maximum(count_BxHxS, 1.0)), NEG_INF)


def vq_attention(q_BxHxLxK: jax.Array, k_hat_BxHxLxK: jax.Array, z_BxHxL: jax.Array,
                 v_BxHxLxV: jax.Array, cache: dict[str, jax.Array], pos_B: jax.Array,
                 codebook_HxSxK: jax.Array, rel: RelativeBias, agg_cache: bool
                 ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Attend over the block, the last M quantized keys, and (agg_cache) every older key.

    Keys within distance M get the relative bias and straight-through quantized keys; older keys
    get content-only scores against their code without gradient to the key, whether they still
    sit in the uncompressed cache or in the aggregated one (count bias and mean value per code),
    so outputs and gradients do not depend on how the sequence is cut into blocks. Without
    agg_cache, keys beyond distance M are not attended.
    Returns the output [B, H, L, V] and the cache after this block.
    """
    mem_len, block_len = cache["k"].shape[2], q_BxHxLxK.shape[2]
    n_slots = mem_len + block_len
    recent = {"z": jnp.concatenate([cache["z"], z_BxHxL], axis=2),
              "k": jnp.concatenate([cache["k"], k_hat_BxHxLxK], axis=2),
              "v": jnp.concatenate([cache["v"], v_BxHxLxV.astype(cache["v"].dtype)], axis=2)}
    dist_LxW = relative_distances(block_len, n_slots, mem_len)
    causal = dist_LxW >= 0
    local = causal if agg_cache else causal & (dist_LxW <= mem_len)
    valid_BxW = slots_valid(pos_B, mem_len, n_slots)
    keep_BxLxW = valid_BxW[:, None, :] & local[None]
    if not agg_cache:
        scores = window_scores(q_BxHxLxK, recent["k"], rel, dist_LxW, keep_BxLxW)
        parts = [(scores, recent["v"])]
    else:
        code_BxHxLxS = jnp.einsum("bhlk,hsk->bhls", q_BxHxLxK + rel.u_1xHx1xK, codebook_HxSxK)
        z_index = jnp.broadcast_to(recent["z"][:, :, None, :], (*code_BxHxLxS.shape[:3], n_slots))
        far = jnp.take_along_axis(code_BxHxLxS, z_index, axis=-1)
        scores = window_scores(q_BxHxLxK, recent["k"], rel, dist_LxW, keep_BxLxW, far)
        agg_scores = code_BxHxLxS + count_biases(cache["count"])[:, :, None, :]
        parts = [(scores, recent["v"]), (agg_scores, cache["mean"])]
    new_cache = {name: recent[name][:, :, block_len:] for name in ("z", "k", "v")}
    new_cache["count"], new_cache["mean"] = (
        aggregate(cache, recent, valid_BxW[:, :block_len]) if agg_cache
        else (cache["count"], cache["mean"]))
    return mix(parts), new_cache


def aggregate(cache: dict[str, jax.Array], recent: dict[str, jax.Array],
              evicted_valid_BxL: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Fold the keys leaving the uncompressed cache into per-code counts and running mean values."""
    block_len = evicted_valid_BxL.shape[1]
    onehot_BxHxLxS = jax.nn.one_hot(recent["z"][:, :, :block_len], cache["count"].shape[-1],
                                    dtype=jnp.float32)
    onehot_BxHxLxS = onehot_BxHxLxS * evicted_valid_BxL[:, None, :, None]
    count = cache["count"] + jnp.sum(onehot_BxHxLxS, axis=2)
    denom_BxHxS = jnp.maximum(count, 1.0)
    added = jnp.einsum("bhls,bhlv->bhsv", onehot_BxHxLxS / denom_BxHxS[:, :, None, :],
                       recent["v"][:, :, :block_len].astype(jnp.float32))
    mean = (cache["count"] / denom_BxHxS)[..., None] * cache["mean"] + added
    return count, mean.astype(cache["mean"].dtype)


def full_attention(q_BxHxLxK: jax.Array, k_BxHxLxK: jax.Array, v_BxHxLxV: jax.Array,
                   cache: dict[str, jax.Array], pos_B: jax.Array, rel: RelativeBias
                   ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Quadratic softmax attention over unquantized keys: the cache of C keys and the whole input.

    Every causal distance gets its relative bias. Returns the output and the last C keys/values.
    """
    capacity, block_len = cache["k"].shape[2], q_BxHxLxK.shape[2]
    n_slots = capacity + block_len
    keys = jnp.concatenate([cache["k"], k_BxHxLxK], axis=2)
    values = jnp.concatenate([cache["v"], v_BxHxLxV.astype(cache["v"].dtype)], axis=2)
    dist_LxW = relative_distances(block_len, n_slots, capacity)
    keep_BxLxW = slots_valid(pos_B, capacity, n_slots)[:, None, :] & (dist_LxW >= 0)[None]
    out = mix([(window_scores(q_BxHxLxK, keys, rel, dist_LxW, keep_BxLxW), values)])
    return out, {"k": keys[:, :, block_len:], "v": values[:, :, block_len:]}
