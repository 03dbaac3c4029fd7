"""One gated attention unit: block recurrence equals one block, a quadratic reference, causality."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tvq.config import ModelConfig
from tvq.model import initial_state
from tvq.model.unit import GatedAttentionUnit

jax.config.update("jax_numpy_rank_promotion", "raise")

BATCH, WIDTH = 2, 16


def tiny(**changes) -> ModelConfig:
    base = ModelConfig(vocab_size=13, d_model=WIDTH, d_k=4, d_v=8, n_code=4, n_layer=1,
                       block_len=4, mem_len=4)
    return dataclasses.replace(base, **changes)


def make_unit(cfg: ModelConfig, x: jax.Array):
    """A unit and its variables, with the XL content/position biases made non-zero."""
    unit = GatedAttentionUnit(cfg, n_block=1, deterministic=True)
    cache = initial_state(cfg, x.shape[0])["units"][0]
    variables = jax.jit(unit.init)(jax.random.key(0), x, cache,
                                   jnp.zeros((x.shape[0],), jnp.int32))
    params = dict(variables["params"])
    params["xl_u"] = jax.random.normal(jax.random.key(1), params["xl_u"].shape)
    params["xl_v"] = jax.random.normal(jax.random.key(2), params["xl_v"].shape)
    return unit, {"params": params}


def run_blocks(unit, variables, x, block_len):
    """Run the unit block by block from a fresh state, carrying its cache and position."""
    cfg = unit.config
    cache, pos = initial_state(cfg, x.shape[0])["units"][0], jnp.zeros((x.shape[0],), jnp.int32)
    outs = []
    for start in range(0, x.shape[1], block_len):
        out, cache, _, _ = unit.apply(variables, x[:, start:start + block_len], cache, pos)
        pos = pos + block_len
        outs.append(out)
    return jnp.concatenate(outs, axis=1)


def inputs(length: int) -> jax.Array:
    return jax.random.normal(jax.random.key(3), (BATCH, length, WIDTH))


@pytest.mark.parametrize("length,block_len,mem_len,agg_cache",
                         [(12, 3, 3, True), (12, 2, 0, True), (12, 4, 8, False)])
def test_blocks_with_carried_state_equal_one_block(length, block_len, mem_len, agg_cache):
    cfg = tiny(mem_len=mem_len, agg_cache=agg_cache)
    x = inputs(length)
    unit, variables = make_unit(cfg, x)
    cotangent = jax.random.normal(jax.random.key(4), (BATCH, length, WIDTH))

    @functools.partial(jax.jit, static_argnums=0)
    def outputs_and_grads(block):
        out, pullback = jax.vjp(lambda v, x: run_blocks(unit, v, x, block), variables, x)
        return out, pullback(cotangent)

    (out_blocks, grads_blocks), (out_one, grads_one) = (outputs_and_grads(block_len),
                                                        outputs_and_grads(length))
    np.testing.assert_allclose(out_blocks, out_one, atol=1e-5, rtol=1e-4)
    for got, want in zip(jax.tree_util.tree_leaves(grads_blocks),
                         jax.tree_util.tree_leaves(grads_one)):
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-4)
    assert float(jnp.abs(grads_blocks[1]).sum()) > 0


@functools.partial(jax.jit, static_argnums=(0, 3, 4))
def quadratic_reference(unit, variables, x, mem_len, agg_cache):
    """Softmax over every past position with quantized keys: XL biases within distance mem_len,
    content-only scores beyond it (or nothing beyond it without the aggregated cache)."""
    length = x.shape[1]
    q, k, v, gate = unit.apply(variables, x, method=lambda m, x: m.project(x))
    codebook = unit.apply(variables, method=lambda m: m.quantizer.codebook())
    rel = unit.apply(variables, method=lambda m: m.relative_bias(length))
    dist2 = jnp.sum(jnp.square(k[:, :, :, None, :] - codebook[None, :, None, :, :]), axis=-1)
    z = jnp.argmin(dist2, axis=-1)
    k_hat = jnp.stack([codebook[h][z[:, h]] for h in range(codebook.shape[0])], axis=1)
    content = jnp.einsum("bhik,bhjk->bhij", q + rel.u_1xHx1xK, k_hat)
    position = jnp.einsum("bhik,dhk->bhid", q + rel.v_1xHx1xK, rel.r_DxHxK)
    i, j = np.arange(length)[:, None], np.arange(length)[None, :]
    dist = i - j
    bias = position[:, :, i, np.clip(dist, 0, length - 1)]
    near = (dist >= 0) & (dist <= mem_len)
    scores = content + jnp.where(near[None, None], bias, 0.0)
    keep = near | ((dist > mem_len) & agg_cache)
    weights = jax.nn.softmax(jnp.where(keep[None, None], scores, -jnp.inf), axis=-1)
    out = jnp.einsum("bhij,bhjv->bhiv", weights, v)
    return unit.apply(variables, out, gate, method=lambda m, o, g: m.output(o, g))


@pytest.mark.parametrize("length,block_len,mem_len,agg_cache",
                         [(12, 4, 8, True), (12, 3, 3, False)])
def test_linear_time_layer_equals_quadratic_reference(length, block_len, mem_len, agg_cache):
    cfg = tiny(mem_len=mem_len, agg_cache=agg_cache, n_head=2)
    x = inputs(length)
    unit, variables = make_unit(cfg, x)
    np.testing.assert_allclose(jax.jit(run_blocks, static_argnums=(0, 3))(unit, variables, x,
                                                                          block_len),
                               quadratic_reference(unit, variables, x, mem_len, agg_cache),
                               atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("agg_cache", [True, False])
def test_layer_jacobian_is_lower_triangular(agg_cache):
    length, block_len, mem_len = 8, 2, 2
    cfg = tiny(mem_len=mem_len, agg_cache=agg_cache)
    x = inputs(length)[:1]
    unit, variables = make_unit(cfg, x)
    jac = jax.jit(jax.jacobian(lambda x: run_blocks(unit, variables, x, block_len)))(x)
    influence = np.asarray(jnp.sum(jnp.abs(jac[0, :, :, 0]), axis=(1, 3)))  # [out pos, in pos]
    dist = np.arange(length)[:, None] - np.arange(length)[None, :]
    attended = (dist >= 0) & ((dist <= mem_len) | agg_cache)
    assert np.all(influence[dist < 0] == 0.0)
    assert np.all(influence[attended] > 0.0)
    assert np.all(influence[~attended] == 0.0)
