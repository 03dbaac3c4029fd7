"""The codebook: nearest codes, straight-through keys, commitment loss, EMA surrogate."""

import jax
import jax.numpy as jnp
import numpy as np

from tvq.model.vq import VectorQuantizer, nearest_codes, sg, st

jax.config.update("jax_numpy_rank_promotion", "raise")

N_HEAD, N_CODE, D_K, GAMMA = 2, 5, 4, 0.9


def quantizer_and_keys(batch: int = 4, length: int = 6):
    quantizer = VectorQuantizer(N_HEAD, N_CODE, D_K, GAMMA)
    keys = jax.random.normal(jax.random.key(0), (batch, N_HEAD, length, D_K))
    params = quantizer.init(jax.random.key(1), keys, 1)["params"]
    params = {"c_sum": params["c_sum"],  # counts away from 1 so sum and mean differ
              "c_count": jax.random.uniform(jax.random.key(2), (N_HEAD, N_CODE), minval=0.5,
                                            maxval=3.0)}
    return quantizer, params, keys


def codebook_of(params):
    return params["c_sum"] / params["c_count"][..., None]


def brute_force_codes(keys, codebook):
    """Nearest code per key by explicit loops over codes."""
    b, h, l, _ = keys.shape
    z = np.zeros((b, h, l), np.int64)
    for index in np.ndindex(b, h, l):
        dists = [np.sum((np.asarray(keys[index]) - np.asarray(codebook[index[1], s])) ** 2)
                 for s in range(codebook.shape[1])]
        z[index] = int(np.argmin(dists))
    return z


def ema_target_by_hand(params, keys, n_block: int = 1):
    """c <- gamma c + (1 - gamma) n_block * (per-code sums and counts, averaged over the batch)."""
    z = brute_force_codes(keys, codebook_of(params))
    batch = keys.shape[0]
    sums, counts = np.zeros((N_HEAD, N_CODE, D_K)), np.zeros((N_HEAD, N_CODE))
    for b, h, l in np.ndindex(*z.shape):
        sums[h, z[b, h, l]] += np.asarray(keys[b, h, l])
        counts[h, z[b, h, l]] += 1.0
    return {"c_sum": GAMMA * params["c_sum"] + (1 - GAMMA) * n_block * sums / batch,
            "c_count": GAMMA * params["c_count"] + (1 - GAMMA) * n_block * counts / batch}


def codebook_grads(quantizer, params, keys, n_block: int = 1):
    return jax.grad(lambda p: quantizer.apply({"params": p}, keys, n_block).l_codebook)(params)


def sgd_step(params, grads):
    return jax.tree_util.tree_map(lambda p, g: p - 1.0 * g, params, grads)


def assert_trees_close(got, want):
    for name in want:
        np.testing.assert_allclose(got[name], want[name], atol=1e-5, rtol=1e-5)


def test_one_sgd_step_at_lr_1_reproduces_the_ema_target():
    quantizer, params, keys = quantizer_and_keys()
    target = ema_target_by_hand(params, keys)
    assert_trees_close(sgd_step(params, codebook_grads(quantizer, params, keys)), target)
    assert not np.allclose(target["c_sum"], params["c_sum"])


def test_gradients_averaged_over_batch_halves_give_the_full_batch_target():
    quantizer, params, keys = quantizer_and_keys()
    halves = [codebook_grads(quantizer, params, part) for part in (keys[:2], keys[2:])]
    averaged = jax.tree_util.tree_map(lambda a, b: (a + b) / 2, *halves)
    assert_trees_close(sgd_step(params, averaged), ema_target_by_hand(params, keys))


def test_gradients_averaged_over_blocks_give_the_whole_window_target():
    quantizer, params, keys = quantizer_and_keys()
    blocks = [codebook_grads(quantizer, params, part, n_block=2)
              for part in (keys[:, :, :3], keys[:, :, 3:])]
    averaged = jax.tree_util.tree_map(lambda a, b: (a + b) / 2, *blocks)
    assert_trees_close(sgd_step(params, averaged), ema_target_by_hand(params, keys))


def test_surrogate_loss_is_zero_valued():
    quantizer, params, keys = quantizer_and_keys()
    assert float(quantizer.apply({"params": params}, keys, 1).l_codebook) == 0.0


def test_stop_gradient_and_straight_through_identities():
    x = jnp.array([1.5, -2.0, 3.0])
    assert np.all(np.asarray(st(x)) == 0.0)
    np.testing.assert_array_equal(jax.grad(lambda x: jnp.sum(st(x) * 3.0))(x), [3.0] * 3)
    np.testing.assert_array_equal(jax.grad(lambda x: jnp.sum(sg(x) * x))(x), x)


def test_nearest_code_assignment_matches_brute_force():
    _, params, keys = quantizer_and_keys()
    z, err2 = nearest_codes(keys, codebook_of(params))
    want = brute_force_codes(keys, codebook_of(params))
    np.testing.assert_array_equal(z, want)
    codes = np.take_along_axis(np.asarray(codebook_of(params))[None], want[..., None], axis=2)
    np.testing.assert_allclose(err2, np.sum((np.asarray(keys) - codes) ** 2, -1), rtol=1e-5,
                               atol=1e-5)


def test_quantized_keys_are_codes_with_identity_gradient():
    quantizer, params, keys = quantizer_and_keys()
    out = quantizer.apply({"params": params}, keys, 1)
    codes = np.take_along_axis(np.asarray(codebook_of(params))[None],
                               np.asarray(out.z)[..., None], axis=2)
    np.testing.assert_allclose(out.k_hat, codes, atol=1e-6)
    cotangent = jax.random.normal(jax.random.key(5), keys.shape)
    _, pullback = jax.vjp(lambda k: quantizer.apply({"params": params}, k, 1).k_hat, keys)
    np.testing.assert_allclose(pullback(cotangent)[0], cotangent, atol=1e-6)


def test_commitment_loss_pulls_keys_toward_their_codes():
    quantizer, params, keys = quantizer_and_keys()
    out = quantizer.apply({"params": params}, keys, 1)
    grad = jax.grad(lambda k: quantizer.apply({"params": params}, k, 1).l_commit)(keys)
    b, _, l, _ = keys.shape
    np.testing.assert_allclose(grad, 2.0 * (keys - out.k_hat) / (b * l), atol=1e-6)
    assert float(jnp.abs(grad).sum()) > 0
    codebook_grad = jax.grad(lambda p: quantizer.apply({"params": p}, keys, 1).l_commit)(params)
    assert all(float(jnp.abs(g).sum()) == 0.0 for g in jax.tree_util.tree_leaves(codebook_grad))
