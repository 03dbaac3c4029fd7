"""The recurrent state carried across blocks, update windows and calls."""

from __future__ import annotations

import jax.numpy as jnp

from tvq.config import ModelConfig

State = dict  # {"pos": int32 [B], "units": [per-unit cache dict] * (2 * n_layer)}


def initial_state(config: ModelConfig, batch_size: int, cache_len: int = 0) -> State:
    """The all-zero state that means "start of sequence"; every leaf is batch-major.

    vq: per unit the last mem_len code indices z, quantized keys k and values v, and the
    aggregated cache (per code: count and mean value). full: per unit a key/value cache of
    cache_len slots (0: attend only within each call). `pos` is each row's absolute position.
    """
    b, h, k, v = batch_size, config.n_head, config.d_k, config.d_v
    dtype = jnp.dtype(config.dtype)
    if config.attention == "vq":
        m, s = config.mem_len, config.n_code
        unit = {"z": jnp.zeros((b, h, m), jnp.int32), "k": jnp.zeros((b, h, m, k), jnp.float32),
                "v": jnp.zeros((b, h, m, v), dtype), "count": jnp.zeros((b, h, s), jnp.float32),
                "mean": jnp.zeros((b, h, s, v), dtype)}
    else:
        unit = {"k": jnp.zeros((b, h, cache_len, k), jnp.float32),
                "v": jnp.zeros((b, h, cache_len, v), dtype)}
    return {"pos": jnp.zeros((b,), jnp.int32),
            "units": [dict(unit) for _ in range(2 * config.n_layer)]}

