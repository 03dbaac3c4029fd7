"""`tvq train`: the jitted, sharded train step and the training loop.

One call of the train step takes a global batch of whole sequences [B, sequence_len], cuts it into
update_len windows and scans over them: each window is one optimizer step, and the model's
recurrent state is carried to the next window with its gradient stopped (as in the original).
Inputs are the targets shifted right with the pad id 0 as BOS; the loss is the mean
cross-entropy over non-pad targets + c_beta * commitment loss + codebook loss.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental import multihost_utils

from tvq import checkpoint, saved_config, sharding
from tvq.config import Config, describe
from tvq.metrics import MetricsLogger
from tvq.optim import learning_rate, make_optimizer

PAD_ID = 0
State = dict[str, Any]  # {"params", "opt_state", "rng", "step"}


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite; the run stops without saving."""


class Preempted(RuntimeError):
    """SIGTERM arrived; the run saved a checkpoint at the next sequence boundary and stopped."""


@contextlib.contextmanager
def _stop_on_sigterm() -> Iterator[Callable[[], bool]]:
    """Yield a function that says whether any process has received SIGTERM (agreed by all).

    Kubernetes sends SIGTERM before it evicts or preempts a pod; the loop then saves and stops.
    """
    received: list[int] = []
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, lambda *_: received.append(1)) if in_main else None

    def requested() -> bool:
        if jax.process_count() == 1:
            return bool(received)
        flags = multihost_utils.process_allgather(np.int32(len(received) > 0))
        return bool(np.any(flags))

    try:
        yield requested
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)


def shift_right(targets_BxT: jax.Array) -> jax.Array:
    """Model inputs: the pad id 0 first (as BOS), then all but the last target."""
    return jnp.pad(targets_BxT[:, :-1], ((0, 0), (1, 0)), constant_values=PAD_ID)


def token_loss(logits_BxLxV: jax.Array, targets_BxL: jax.Array) -> jax.Array:
    """Mean cross-entropy in nats over the targets that are not the pad id."""
    ce_BxL = optax.softmax_cross_entropy_with_integer_labels(
        logits_BxLxV.astype(jnp.float32), targets_BxL)
    mask_BxL = (targets_BxL != PAD_ID).astype(jnp.float32)
    return jnp.sum(ce_BxL * mask_BxL) / jnp.maximum(jnp.sum(mask_BxL), 1.0)


def init_params(config: Config, model: Any, rng: jax.Array) -> Any:
    """Fresh parameters, traced on one block of one sequence."""
    from tvq.model import initial_state

    inputs_1xL = jnp.zeros((1, config.model.block_len), jnp.int32)
    return model.init(rng, inputs_1xL, initial_state(config.model, 1),
                      deterministic=True)["params"]


def make_init_state(config: Config, model: Any,
                    tx: optax.GradientTransformation) -> Callable[[], State]:
    """A function () -> fresh train state, from run.seed (to be jitted with out_shardings)."""
    def init_state() -> State:
        rng, init_rng = jax.random.split(jax.random.PRNGKey(config.run.seed))
        params = init_params(config, model, init_rng)
        return {"params": params, "opt_state": tx.init(params), "rng": rng,
                "step": jnp.zeros((), jnp.int32)}
    return init_state


def make_train_step(config: Config, model: Any, tx: optax.GradientTransformation,
                    codebook: Any) -> Callable[[State, jax.Array], tuple[State, dict]]:
    """(state, targets_BxT) -> (state after T/update_len optimizer steps, mean window metrics)."""
    from tvq.model import initial_state

    update_len, c_beta = config.data.update_len, config.model.c_beta
    lr_at = learning_rate(config.optimizer)
    deterministic = not any((config.model.p_dropemb, config.model.p_dropsin,
                             config.model.p_dropres, config.model.p_droplyr))

    def loss_fn(params: Any, inputs_BxU: jax.Array, targets_BxU: jax.Array, model_state: Any,
                rng: jax.Array) -> tuple[jax.Array, tuple[dict, Any]]:
        out = model.apply({"params": params}, inputs_BxU, model_state,
                          deterministic=deterministic, rngs={"dropout": rng})
        loss = token_loss(out.logits, targets_BxU)
        total = loss + c_beta * out.l_commit + out.l_codebook
        return total, ({"loss": loss, "l_commit": out.l_commit,
                        "l_codebook": out.l_codebook}, out.state)

    def window(carry: tuple[State, Any], io: tuple[jax.Array, jax.Array]):
        state, model_state = carry
        rng, dropout_rng = jax.random.split(state["rng"])
        grads, (metrics, model_state) = jax.grad(loss_fn, has_aux=True)(
            state["params"], *io, model_state, dropout_rng)
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        main_grads = jax.tree.map(lambda g, is_code: jnp.zeros_like(g) if is_code else g,
                                  grads, codebook)
        metrics = {**metrics, "grad_norm": optax.tree.norm(main_grads),
                   "lr": lr_at(state["step"])}
        new_state = {"params": optax.apply_updates(state["params"], updates),
                     "opt_state": opt_state, "rng": rng, "step": state["step"] + 1}
        return (new_state, jax.lax.stop_gradient(model_state)), metrics

    def train_step(state: State, targets_BxT: jax.Array) -> tuple[State, dict]:
        batch, length = targets_BxT.shape
        n_window = length // update_len

        def windows(x_BxT: jax.Array) -> jax.Array:
            return x_BxT.reshape(batch, n_window, update_len).transpose(1, 0, 2)

        carry = (state, initial_state(config.model, batch))
        (state, _), metrics = jax.lax.scan(
            window, carry, (windows(shift_right(targets_BxT)), windows(targets_BxT)))
        return state, jax.tree.map(lambda x: jnp.mean(x, axis=0), metrics)

    return train_step


def _crossed(before: int, after: int, every: int) -> bool:
    """Whether a multiple of `every` lies in (before, after]."""
    return after // every > before // every


def _build(config: Config, mesh: jax.sharding.Mesh) -> tuple[Callable, Callable, Any]:
    """Jitted (init_state, train_step) and the abstract state with its shardings."""
    from tvq.model import Transformer, codebook_mask

    model = Transformer(config.model)
    abstract_params = jax.eval_shape(
        lambda: init_params(config, model, jax.random.PRNGKey(0)))
    codebook = codebook_mask(abstract_params)
    tx = make_optimizer(config.optimizer, codebook)
    init_state = make_init_state(config, model, tx)
    abstract = jax.eval_shape(init_state)
    shardings = sharding.state_shardings(mesh, abstract)
    abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                            abstract, shardings)
    train_step = jax.jit(make_train_step(config, model, tx, codebook),
                         in_shardings=(shardings, sharding.batch_sharding(mesh)),
                         out_shardings=(shardings, sharding.replicated(mesh)),
                         donate_argnums=0)
    return jax.jit(init_state, out_shardings=shardings), train_step, abstract


def _describe_params(abstract_params: Any, mesh: jax.sharding.Mesh) -> str:
    """How many parameters there are and how many arrays fsdp shards."""
    leaves = jax.tree.leaves(abstract_params)
    sharded = sum("fsdp" in leaf.sharding.spec for leaf in leaves)
    count = sum(math.prod(leaf.shape) for leaf in leaves)
    return (f"{count:,} parameters in {len(leaves)} arrays, {sharded} of them sharded over "
            f"fsdp={mesh.shape['fsdp']}")


def train(config: Config) -> dict[str, float]:
    """Train to optimizer.max_steps + extra_steps, resuming from a checkpoint when there is one.

    Returns the last logged metrics. Raises NonFiniteLoss (nothing saved) on a NaN/inf loss,
    and Preempted after saving when SIGTERM arrives before the end.
    """
    with _stop_on_sigterm() as stop_requested:
        return _train(config, stop_requested)


def _train(config: Config, stop_requested: Callable[[], bool]) -> dict[str, float]:
    from tvq.data import make_train_iterator

    pid, nproc = jax.process_index(), jax.process_count()
    mesh = sharding.make_mesh(config)
    print(f"tvq: process {pid} of {nproc}, {jax.local_device_count()} local of "
          f"{jax.device_count()} devices ({jax.default_backend()}), mesh "
          f"data={mesh.shape['data']} fsdp={mesh.shape['fsdp']}", flush=True)
    if pid == 0:
        print(f"tvq: config {describe(config)} optimizer={config.optimizer.name} "
              f"steps={config.optimizer.max_steps}+{config.optimizer.extra_steps} "
              f"out_dir={config.run.out_dir}", flush=True)
    init_state, train_step, abstract_state = _build(config, mesh)
    if pid == 0:
        print(f"tvq: {_describe_params(abstract_state['params'], mesh)}", flush=True)
    iterator = make_train_iterator(config, pid, nproc)
    restore_from = checkpoint.source_dir(config.run)
    if restore_from is None:
        state, step = init_state(), 0
    else:
        state, step = checkpoint.restore_train_state(restore_from, abstract_state, iterator)
        print(f"tvq: restored step {step} from {restore_from}", flush=True)

    total = config.optimizer.max_steps + config.optimizer.extra_steps
    if step >= total and pid == 0:
        print(f"tvq: already at step {step} of {total}; nothing to train", flush=True)
    windows = config.data.sequence_len // config.data.update_len
    tokens_per_call = config.data.global_batch_size * config.data.sequence_len
    logged: dict[str, float] = {}
    with contextlib.ExitStack() as cleanup:
        writer = checkpoint.CheckpointWriter(config.run)
        if pid == 0:
            saved_config.save(config)
        cleanup.callback(writer.close)
        logger = MetricsLogger(config, pid == 0, total, step)
        cleanup.callback(logger.close)
        clock, tokens_seen, stopping = time.perf_counter(), 0, False
        while step < total and not stopping:
            state, metrics = train_step(state, sharding.global_batch(mesh, next(iterator)))
            before, step = step, step + windows
            values = {key: float(value) for key, value in jax.device_get(metrics).items()}
            if not math.isfinite(values["loss"]):
                raise NonFiniteLoss(f"non-finite loss {values['loss']} at step {step}; stopped "
                                    "without saving (the last checkpoint is intact)")
            tokens_seen += tokens_per_call
            logger.advance(step)
            if _crossed(before, step, config.run.log_every) or step >= total:
                now = time.perf_counter()
                logged = {**values, "bpb": values["loss"] / math.log(2),
                          "tokens_per_s": tokens_seen / max(now - clock, 1e-9)}
                logger.log(step, logged)
                clock, tokens_seen = now, 0
            stopping = stop_requested()
            if _crossed(before, step, config.run.save_every) or step >= total or stopping:
                writer.save(step, state, iterator)
    if step < total:
        raise Preempted(f"stopped by SIGTERM at step {step} of {total}; the checkpoint saved "
                        "there resumes the run")
    return logged


__all__ = ["NonFiniteLoss", "PAD_ID", "Preempted", "init_params", "make_init_state",
           "make_train_step", "shift_right", "token_loss", "train"]
