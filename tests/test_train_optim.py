"""The optimizer: schedule shape, the codebook's plain-SGD path, decay on matrices only."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tvq.config import OptimizerConfig
from tvq.optim import FINAL_LR_FRACTION, learning_rate, make_optimizer


def test_schedule_warms_up_decays_by_cosine_then_holds_for_extra_steps():
    config = OptimizerConfig(lr_max=1.0, warmup_steps=10, max_steps=110, extra_steps=50)
    lr = learning_rate(config)
    assert float(lr(0)) == 0.0
    assert float(lr(5)) == pytest.approx(0.5)
    assert float(lr(10)) == pytest.approx(1.0)
    midway = 1.0 - (1 - FINAL_LR_FRACTION) * 0.5  # cosine at half the decay
    assert float(lr(60)) == pytest.approx(midway, rel=1e-5)
    assert float(lr(110)) == pytest.approx(FINAL_LR_FRACTION)
    assert float(lr(160)) == pytest.approx(FINAL_LR_FRACTION)  # extra steps: constant


def test_constant_schedule_stays_at_lr_max_after_warmup():
    lr = learning_rate(OptimizerConfig(lr_max=3e-3, schedule="constant", warmup_steps=4,
                                       max_steps=100))
    assert [round(float(lr(s)), 8) for s in (2, 4, 99)] == [1.5e-3, 3e-3, 3e-3]


@pytest.mark.parametrize("name", ["adamw", "adafactor"])
def test_codebook_gets_plain_sgd_at_rate_one_and_main_params_do_not(name):
    params = {"w": jnp.ones((4, 4)), "codebook": jnp.full((3, 4), 2.0)}
    mask = {"w": False, "codebook": True}
    config = OptimizerConfig(name=name, lr_max=0.5, warmup_steps=0, max_steps=10, grad_clip=0.01,
                             weight_decay=0.1 if name == "adamw" else 0.0)
    tx = make_optimizer(config, mask)
    grads = {"w": jnp.full((4, 4), 3.0), "codebook": jnp.full((3, 4), 0.25)}
    updates, _ = tx.update(grads, tx.init(params), params)
    new = optax.apply_updates(params, updates)
    # codebook: params - 1.0 * grad, untouched by clipping, Adam scaling, schedule or decay
    np.testing.assert_allclose(new["codebook"], 2.0 - 0.25)
    assert not np.allclose(new["w"], 1.0 - 3.0)
    assert np.all(np.asarray(new["w"]) < 1.0)


def test_weight_decay_shrinks_matrices_only_and_is_not_scaled_by_lr():
    params = {"w": jnp.ones((2, 2)), "b": jnp.ones((2,))}
    config = OptimizerConfig(lr_max=1e-9, warmup_steps=0, max_steps=10, grad_clip=0.0,
                             weight_decay=0.25)
    tx = make_optimizer(config, {"w": False, "b": False})
    zeros = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zeros, tx.init(params), params)
    np.testing.assert_allclose(updates["w"], -0.25, rtol=1e-6)
    np.testing.assert_allclose(updates["b"], 0.0, atol=1e-12)
