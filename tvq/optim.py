"""The optimizer: AdamW or Adafactor with warmup + cosine, clipping and decay; SGD for the codebook.

As in the original: the main parameters get clipping -> optimizer at lr_max -> the schedule's
multiplier -> decoupled weight decay (not scaled by the learning rate, matrices only); the
codebook's EMA parameters get plain SGD at learning rate 1 on the loss gradient, which is how
their EMA update is expressed.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from tvq.config import OptimizerConfig

FINAL_LR_FRACTION = 0.1  # the cosine ends at 10% of lr_max; extra steps stay there


def schedule(config: OptimizerConfig) -> optax.Schedule:
    """Multiplier on lr_max: linear warmup from 0, then cosine (or constant) to max_steps."""
    warmup = optax.linear_schedule(0.0, 1.0, transition_steps=max(config.warmup_steps, 1))
    decay_steps = max(config.max_steps - config.warmup_steps, 1)
    if config.schedule == "cosine":
        main = optax.cosine_decay_schedule(1.0, decay_steps, alpha=FINAL_LR_FRACTION)
    else:
        main = optax.constant_schedule(1.0)
    return optax.join_schedules([warmup, main], boundaries=[config.warmup_steps])


def learning_rate(config: OptimizerConfig) -> Callable[[Any], Any]:
    """The main parameters' learning rate at an optimizer step (for logging)."""
    multiplier = schedule(config)
    return lambda step: config.lr_max * multiplier(step)


def _base_optimizer(config: OptimizerConfig) -> optax.GradientTransformation:
    if config.name == "adamw":
        return optax.adam(config.lr_max, b1=0.9, b2=0.98, eps=1e-9, mu_dtype=jnp.float32)
    return optax.adafactor(config.lr_max, multiply_by_parameter_scale=True,
                           clipping_threshold=1.0)


def _main_transform(config: OptimizerConfig) -> optax.GradientTransformation:
    parts = []
    if config.grad_clip > 0:
        parts.append(optax.clip_by_global_norm(config.grad_clip))
    parts += [_base_optimizer(config), optax.scale_by_schedule(schedule(config))]
    if config.weight_decay > 0:
        parts.append(optax.add_decayed_weights(
            -config.weight_decay, mask=lambda p: jax.tree.map(lambda x: jnp.ndim(x) != 1, p)))
    return optax.chain(*parts)


def make_optimizer(config: OptimizerConfig, codebook_mask: Any) -> optax.GradientTransformation:
    """The full transformation; `codebook_mask` is a params-shaped tree, True on codebook leaves."""
    labels = jax.tree.map(lambda is_codebook: "codebook" if is_codebook else "main", codebook_mask)
    return optax.multi_transform(
        {"main": _main_transform(config), "codebook": optax.sgd(1.0)}, labels)


__all__ = ["FINAL_LR_FRACTION", "learning_rate", "make_optimizer", "schedule"]
