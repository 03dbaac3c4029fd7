"""The whole model: block recurrence, causality, bfloat16, the full baseline, losses, dropout."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tvq.config import ModelConfig
from tvq.model import Transformer, codebook_mask, initial_state

jax.config.update("jax_numpy_rank_promotion", "raise")

BATCH, LENGTH, VOCAB = 2, 16, 13


def tiny(**changes) -> ModelConfig:
    base = ModelConfig(vocab_size=VOCAB, d_model=16, d_k=4, d_v=8, n_code=4, n_layer=1,
                       block_len=4, mem_len=4)
    return dataclasses.replace(base, **changes)


def tokens(batch: int = BATCH, length: int = LENGTH) -> jax.Array:
    return jax.random.randint(jax.random.key(0), (batch, length), 0, VOCAB)


@functools.lru_cache
def params_for(cfg: ModelConfig):
    """Parameters (with non-zero XL content/position biases); independent of the block length."""
    state = initial_state(cfg, BATCH)
    params = jax.jit(Transformer(cfg).init)(jax.random.key(1), tokens(), state)["params"]
    key = jax.random.key(2)

    def perturb(path, leaf):
        name = getattr(path[-1], "key", "")
        return jax.random.normal(jax.random.fold_in(key, hash(str(path)) % 997), leaf.shape) \
            if name in ("xl_u", "xl_v") else leaf

    return jax.tree_util.tree_map_with_path(perturb, params)


@functools.partial(jax.jit, static_argnames=("cfg", "deterministic", "cache_len"))
def forward(params, inputs, cfg, state=None, deterministic=True, key=None, cache_len=0):
    state = initial_state(cfg, inputs.shape[0], cache_len) if state is None else state
    rngs = None if key is None else {"dropout": key}
    return Transformer(cfg).apply({"params": params}, inputs, state,
                                  deterministic=deterministic, rngs=rngs)


@pytest.mark.parametrize("agg_cache", [True, False])
def test_model_blocks_windows_and_one_block_agree(agg_cache):
    cfg = tiny(agg_cache=agg_cache)
    one_block = dataclasses.replace(cfg, block_len=LENGTH)
    params, inputs = params_for(cfg), tokens()
    cotangent = jax.random.normal(jax.random.key(3), (BATCH, LENGTH, VOCAB))

    @functools.partial(jax.jit, static_argnums=0)
    def logits_and_grads(config):
        logits, pullback = jax.vjp(lambda p: forward(p, inputs, config).logits, params)
        return logits, pullback(cotangent)[0]

    (logits_b, grads_b), (logits_1, grads_1) = logits_and_grads(cfg), logits_and_grads(one_block)
    np.testing.assert_allclose(logits_b, logits_1, atol=1e-5, rtol=1e-4)
    for got, want in zip(jax.tree_util.tree_leaves(grads_b), jax.tree_util.tree_leaves(grads_1)):
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-4)
    if not agg_cache:
        return  # carrying state across calls is checked once, with every cache in use
    first = forward(params, inputs[:, :LENGTH // 2], cfg)
    second = forward(params, inputs[:, LENGTH // 2:], cfg, first.state)
    np.testing.assert_allclose(jnp.concatenate([first.logits, second.logits], axis=1), logits_b,
                               atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("agg_cache", [True, False])
def test_model_is_causal(agg_cache):
    """Changing token j changes the logits at j and after, never before (discrete Jacobian)."""
    cfg = tiny(agg_cache=agg_cache, mem_len=4)
    base = tokens(1)
    changed = jnp.stack([base[0].at[j].set((base[0, j] + 1) % VOCAB) for j in range(LENGTH)])
    logits = forward(params_for(cfg), jnp.concatenate([base, changed]), cfg).logits
    moved = np.asarray(jnp.max(jnp.abs(logits[1:] - logits[:1]), axis=-1))  # [changed j, pos]
    j, pos = np.arange(LENGTH)[:, None], np.arange(LENGTH)[None, :]
    reach = LENGTH if agg_cache else 2 * cfg.mem_len  # two units, each seeing mem_len back
    assert np.all(moved[pos < j] == 0.0)
    assert np.all(moved[(pos >= j) & (pos - j <= reach)] > 0.0)
    assert np.all(moved[pos - j > reach] == 0.0)


def test_bfloat16_forward_is_close_to_float32():
    """bfloat16 activations: logits within 5% of the float32 logits' spread (max abs error)."""
    cfg = tiny()
    params, inputs = params_for(cfg), tokens()
    out32 = forward(params, inputs, cfg)
    out16 = forward(params, inputs, dataclasses.replace(cfg, dtype="bfloat16"))
    assert out16.logits.dtype == jnp.float32
    assert out16.state["units"][0]["v"].dtype == jnp.bfloat16
    spread = float(jnp.std(out32.logits))
    assert float(jnp.max(jnp.abs(out16.logits - out32.logits))) < 0.05 * spread
    assert not np.array_equal(out16.logits, out32.logits)


def test_full_attention_decodes_incrementally_with_a_cache():
    cfg = tiny(attention="full")
    params, inputs = params_for(cfg), tokens()
    whole = forward(params, inputs, cfg).logits
    state, pieces = initial_state(cfg, BATCH, cache_len=LENGTH), []
    for start in range(0, LENGTH, cfg.block_len):
        out = forward(params, inputs[:, start:start + cfg.block_len], cfg, state)
        state = out.state
        pieces.append(out.logits)
    np.testing.assert_allclose(jnp.concatenate(pieces, axis=1), whole, atol=1e-5, rtol=1e-4)
    assert not np.allclose(whole, forward(params, inputs, tiny()).logits, atol=1e-3)


def test_same_state_twice_is_pure_and_state_is_batch_major():
    cfg = tiny()
    params, inputs = params_for(cfg), tokens()
    state = forward(params, inputs[:, :8], cfg).state
    a, b = forward(params, inputs[:, 8:12], cfg, state), forward(params, inputs[:, 8:12], cfg,
                                                                 state)
    np.testing.assert_array_equal(a.logits, b.logits)
    assert jax.tree_util.tree_structure(a.state) == jax.tree_util.tree_structure(state)
    assert all(leaf.shape[0] == BATCH for leaf in jax.tree_util.tree_leaves(a.state))
    np.testing.assert_array_equal(a.state["pos"], [12, 12])


def test_lm_gradient_skips_the_codebook_and_the_surrogate_reaches_only_it():
    cfg = tiny()
    params, inputs = params_for(cfg), tokens()
    mask = codebook_mask(params)
    assert sum(jax.tree_util.tree_leaves(mask)) == 2 * 2 * cfg.n_layer  # c_sum, c_count per unit

    def grads(which):
        return jax.grad(lambda p: which(forward(p, inputs, cfg)))(params)

    lm = grads(lambda out: jnp.mean(jax.nn.log_softmax(out.logits)[..., 1]) + out.l_commit)
    surrogate = grads(lambda out: out.l_codebook)
    for is_code, g_lm, g_code in zip(jax.tree_util.tree_leaves(mask),
                                     jax.tree_util.tree_leaves(lm),
                                     jax.tree_util.tree_leaves(surrogate)):
        assert (float(jnp.abs(g_lm).sum()) == 0.0) == is_code
        assert (float(jnp.abs(g_code).sum()) > 0.0) == is_code


def test_timeless_dropout_masks_are_shared_across_blocks():
    """Sinusoid dropout and layerdrop draw one mask per call, so cutting blocks changes nothing."""
    cfg = tiny(p_dropsin=0.3, p_droplyr=0.3)
    params, inputs, key = params_for(cfg), tokens(), jax.random.key(7)
    blocks = forward(params, inputs, cfg, deterministic=False, key=key).logits
    one = forward(params, inputs, dataclasses.replace(cfg, block_len=LENGTH),
                  deterministic=False, key=key).logits
    np.testing.assert_allclose(blocks, one, atol=1e-5, rtol=1e-4)
    assert not np.allclose(blocks, forward(params, inputs, cfg).logits, atol=1e-3)


def test_residual_and_embedding_dropout_are_active_only_in_training():
    cfg = tiny(p_dropres=0.5, p_dropemb=0.5)
    params, inputs = params_for(cfg), tokens()
    train = forward(params, inputs, cfg, deterministic=False, key=jax.random.key(8)).logits
    again = forward(params, inputs, cfg, deterministic=False, key=jax.random.key(8)).logits
    np.testing.assert_array_equal(train, again)
    assert not np.allclose(train, forward(params, inputs, cfg).logits, atol=1e-3)


def test_length_not_a_multiple_of_block_len_is_refused():
    cfg = tiny()
    with pytest.raises(ValueError, match="block_len"):
        forward(params_for(cfg), tokens(length=6), cfg)
