"""The whole Transformer-VQ model: embeddings, a scan over blocks of all layers, logits."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import struct

from tvq.config import ModelConfig
from tvq.model.position import sinusoids
from tvq.model.state import State
from tvq.model.unit import (KERNEL_INIT, FeedForward, GatedAttentionUnit, RMSNorm, keep_scale,
                            with_rank)
from tvq.model.vq import CODEBOOK_PARAMS


@struct.dataclass
class ModelOutput:
    """What one call returns (a pytree, so it can leave jit)."""

    logits: jax.Array  # float32 [B, L, vocab_size]
    state: State  # the state after the last block, same structure as the input state
    l_commit: jax.Array  # float32 scalar, unweighted commitment loss
    l_codebook: jax.Array  # float32 scalar codebook surrogate (SGD at lr 1 gives the EMA target)


class BlockStack(nn.Module):
    """All 2 * n_layer units applied to one block; scanned over the blocks of a window."""

    config: ModelConfig
    n_block: int
    deterministic: bool

    @nn.compact
    def __call__(self, state: State, x_BxLxD: jax.Array, timeless_key: jax.Array | None
                 ) -> tuple[State, tuple[jax.Array, jax.Array, jax.Array]]:
        cfg = self.config
        caches, l_commit, l_codebook = [], jnp.zeros(()), jnp.zeros(())
        for i, cache in enumerate(state["units"]):
            sin_key = layer_key = None
            if timeless_key is not None:
                sin_key, layer_key = jax.random.split(jax.random.fold_in(timeless_key, i))
            layer_keep = keep_scale(layer_key, cfg.p_droplyr, (x_BxLxD.shape[0], 1, 1))

            def layerdrop(res: jax.Array) -> jax.Array:
                return res if layer_keep is None else res * layer_keep.astype(res.dtype)

            res, new_cache, commit, codebook = GatedAttentionUnit(
                cfg, self.n_block, self.deterministic, name=f"unit_{i}")(
                x_BxLxD, cache, state["pos"], sin_key)
            x_BxLxD = x_BxLxD + layerdrop(res)
            if cfg.d_ff:
                mlp = FeedForward(cfg, name=f"mlp_{i}")(x_BxLxD)
                x_BxLxD = x_BxLxD + layerdrop(
                    nn.Dropout(cfg.p_dropres)(mlp, deterministic=self.deterministic))
            caches.append(new_cache)
            l_commit, l_codebook = l_commit + commit, l_codebook + codebook
        new_state = {"pos": state["pos"] + x_BxLxD.shape[1], "units": caches}
        return new_state, (x_BxLxD, l_commit, l_codebook)


class Transformer(nn.Module):
    """Transformer-VQ language model over int32 tokens [B, L] (L a multiple of block_len)."""

    config: ModelConfig

    @nn.compact
    def __call__(self, inputs_BxT: jax.Array, state: State, deterministic: bool = True
                 ) -> ModelOutput:
        cfg = self.config
        batch, length = inputs_BxT.shape
        block_len = cfg.block_len if cfg.attention == "vq" else length
        if length % block_len:
            raise ValueError(f"inputs: length {length} is not a multiple of model.block_len "
                             f"({block_len})")
        embs = self.param("embs", nn.initializers.normal(1.0), (cfg.vocab_size, cfg.d_model),
                          jnp.float32)
        x = jnp.take(embs, inputs_BxT, axis=0)
        if cfg.pe_abs:
            pe_scale = self.param("pe_scale", nn.initializers.zeros, (), jnp.float32)
            positions = state["pos"][:, None] + jnp.arange(length)[None, :]
            x = x + pe_scale * sinusoids(positions, cfg.d_model, cfg.pe_lam)
        x = nn.Dropout(cfg.p_dropemb)(x.astype(cfg.dtype), deterministic=deterministic)
        timeless_key = None
        if not deterministic and (cfg.p_dropsin > 0 or cfg.p_droplyr > 0):
            timeless_key = self.make_rng("dropout")
        n_block = length // block_len
        x_KxBxLxD = jnp.transpose(x.reshape(batch, n_block, block_len, cfg.d_model), (1, 0, 2, 3))
        blocks = nn.scan(nn.remat(BlockStack, prevent_cse=False), variable_broadcast="params",
                         split_rngs={"params": False, "dropout": True},
                         in_axes=(0, nn.broadcast), out_axes=0, length=n_block)
        new_state, (y_KxBxLxD, l_commit, l_codebook) = blocks(
            cfg, n_block, deterministic, name="blocks")(state, x_KxBxLxD, timeless_key)
        y = jnp.transpose(y_KxBxLxD, (1, 0, 2, 3)).reshape(batch, length, cfg.d_model)
        if cfg.e_preln:
            y = RMSNorm(name="out_norm")(y)
        y = y.astype(jnp.float32)
        if cfg.e_tie:
            bias = self.param("bias_out", nn.initializers.zeros, (cfg.vocab_size,), jnp.float32)
            logits = y @ embs.T + with_rank(bias, 3)
        else:
            logits = nn.Dense(cfg.vocab_size, kernel_init=KERNEL_INIT, name="out_proj")(y)
        return ModelOutput(logits * cfg.e_scale, new_state, jnp.mean(l_commit),
                           jnp.mean(l_codebook))


def codebook_mask(params: Any) -> Any:
    """Pytree of bool like params: True for the codebooks' EMA statistics (c_sum, c_count)."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: getattr(path[-1], "key", None) in CODEBOOK_PARAMS, params)
