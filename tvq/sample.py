"""`tvq sample`: nucleus sampling one token at a time with the recurrent state.

The state of completed blocks is kept; the current, partly filled block is re-run with that state
for each new token (its unfilled positions hold the pad id and cannot influence earlier ones), and
the state advances when the block fills. So each token costs one block's forward pass, however
long the context. The per-token step is jitted once: every shape is static and the position, the
forced prompt token and the RNG are traced values.

Samples start from the pad id 0 as the first input (as training and evaluation do), continue
`run.prompt` when one is given, and are written under `run.out_dir/samples/`: decoded text files,
or 64x64 RGB PNG images for imagenet64.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Callable, Iterator, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from tvq.config import Config, ConfigError, ModelConfig
from tvq.data import load_vocab
from tvq.data.vocab import NUM_SPECIAL, PAD_ID
from tvq.evaluate import local_mesh, restore_model, to_local_devices
from tvq.model import Transformer, initial_state

IMAGE_SHAPE = (64, 64, 3)
IMAGE_LEN = IMAGE_SHAPE[0] * IMAGE_SHAPE[1] * IMAGE_SHAPE[2]


def nucleus_filter(logits_BxV: jax.Array, p: float) -> jax.Array:
    """Keep the smallest set of most likely tokens whose probability mass reaches `p`.

    A token is kept when the mass of the tokens more likely than it is below `p`, so the most
    likely token is always kept (p -> 0 is greedy) and p = 1 keeps every token. The others get
    logit -inf.
    """
    if p >= 1.0:
        return logits_BxV
    probs_BxV = jax.nn.softmax(logits_BxV.astype(jnp.float32), axis=-1)
    sorted_BxV = -jnp.sort(-probs_BxV, axis=-1)
    mass_before_BxV = jnp.cumsum(sorted_BxV, axis=-1) - sorted_BxV
    kept_Bx1 = jnp.sum(mass_before_BxV < p, axis=-1, keepdims=True)
    threshold_Bx1 = jnp.take_along_axis(sorted_BxV, kept_Bx1 - 1, axis=-1)
    return jnp.where(probs_BxV >= threshold_Bx1, logits_BxV, -jnp.inf)


class SampleCarry(NamedTuple):
    """What the per-token step carries: the state after the completed blocks, the current
    block's inputs, and the RNG."""

    state: Any
    inputs_BxL: jax.Array
    rng: jax.Array


StepFn = Callable[[Any, SampleCarry, jax.Array, jax.Array, jax.Array],
                  tuple[SampleCarry, jax.Array, jax.Array]]


def chunk_len(config: Config) -> int:
    """Tokens re-run per step: one block (vq), or one update window for full attention, whose
    state carries nothing between calls (so samples see the context training saw)."""
    return config.model.block_len if config.model.attention == "vq" else config.data.update_len


@functools.lru_cache(maxsize=8)
def make_sample_step(model_config: ModelConfig, p_nucleus: float, block_len: int) -> StepFn:
    """The jitted per-token step over blocks of `block_len` tokens.

    step(params, carry, t, forced, is_forced) -> (carry, token_B, logits_BxV): the logits for
    position t, the token at position t (the `forced` prompt token when `is_forced`, else a
    nucleus sample) and the carry for position t + 1.
    """
    model = Transformer(model_config)

    def step(params: Any, carry: SampleCarry, t: jax.Array, forced: jax.Array,
             is_forced: jax.Array) -> tuple[SampleCarry, jax.Array, jax.Array]:
        offset = t % block_len
        out = model.apply({"params": params}, carry.inputs_BxL, carry.state, deterministic=True)
        logits_BxV = jax.lax.dynamic_index_in_dim(out.logits, offset, axis=1, keepdims=False)
        rng, key = jax.random.split(carry.rng)
        sampled_B = jax.random.categorical(key, nucleus_filter(logits_BxV, p_nucleus), axis=-1)
        token_B = jnp.where(is_forced, forced, sampled_B).astype(jnp.int32)
        block_full = offset == block_len - 1
        state = jax.tree.map(lambda new, old: jnp.where(block_full, new, old),
                             out.state, carry.state)
        inputs_BxL = jnp.where(block_full, PAD_ID, carry.inputs_BxL)
        inputs_BxL = inputs_BxL.at[:, (offset + 1) % block_len].set(token_B)
        return SampleCarry(state, inputs_BxL, rng), token_B, logits_BxV

    return jax.jit(step)


def generate_steps(config: Config, params: Any, prompt_ids: list[int], batch: int,
                   rng: jax.Array) -> Iterator[tuple[jax.Array, jax.Array]]:
    """Yield (token_B, logits_BxV) for each of len(prompt_ids) + run.sample_len positions."""
    step = make_sample_step(config.model, config.run.p_nucleus, chunk_len(config))
    inputs_BxL = jnp.full((batch, chunk_len(config)), PAD_ID, jnp.int32)
    carry = SampleCarry(initial_state(config.model, batch), inputs_BxL, rng)
    for t in range(len(prompt_ids) + config.run.sample_len):
        is_forced = t < len(prompt_ids)
        forced = prompt_ids[t] if is_forced else PAD_ID
        carry, token_B, logits_BxV = step(params, carry, jnp.int32(t), jnp.int32(forced),
                                          jnp.bool_(is_forced))
        yield token_B, logits_BxV


def generate(config: Config, params: Any, prompt_ids: list[int], batch: int,
             rng: jax.Array) -> np.ndarray:
    """Tokens [batch, len(prompt_ids) + run.sample_len]: the prompt, then the samples."""
    tokens = [token_B for token_B, _ in generate_steps(config, params, prompt_ids, batch,
                                                      rng)]
    return np.asarray(jnp.stack(tokens, axis=1))


def tokens_to_images(tokens_T: np.ndarray) -> list[np.ndarray]:
    """Consecutive 64x64x3 uint8 images from pixel tokens (byte values offset by the specials)."""
    pixels = np.clip(np.asarray(tokens_T, np.int64) - NUM_SPECIAL, 0, 255).astype(np.uint8)
    return list(pixels.reshape(-1, *IMAGE_SHAPE))


def write_samples(config: Config, tokens_BxT: np.ndarray, vocab: Any, step: int) -> list[str]:
    """Write each sample under run.out_dir/samples/ (text, or PNG images); return the paths."""
    directory = os.path.join(config.run.out_dir, "samples")
    os.makedirs(directory, exist_ok=True)
    stem = f"step{step}_seed{config.run.seed}_proc{jax.process_index()}"
    paths = []
    for item, tokens_T in enumerate(tokens_BxT):
        if config.data.dataset == "imagenet64":
            for index, image in enumerate(tokens_to_images(tokens_T)):
                path = os.path.join(directory, f"{stem}_item{item}_image{index}.png")
                Image.fromarray(image, mode="RGB").save(path)
                paths.append(path)
        else:
            path = os.path.join(directory, f"{stem}_item{item}.txt")
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(vocab.decode(tokens_T.tolist()))
            paths.append(path)
    return paths


def check_sample_config(config: Config) -> None:
    """Checks that only sampling needs; ConfigError with one line, before any compute."""
    if config.data.dataset != "imagenet64":
        return
    if config.run.prompt:
        raise ConfigError("run.prompt: not allowed for dataset imagenet64 (samples are images)")
    if config.run.sample_len % IMAGE_LEN:
        raise ConfigError(f"run.sample_len: got {config.run.sample_len}; allowed for imagenet64: "
                          f"a multiple of {IMAGE_LEN} (one 64x64x3 image)")


def sample(config: Config) -> list[str]:
    """Sample run.sample_batch sequences from the run's checkpoint; return the written paths."""
    check_sample_config(config)
    vocab = load_vocab(config)
    prompt_ids = [int(i) for i in vocab.encode(config.run.prompt)] if config.run.prompt else []
    params, step = restore_model(config)
    params = to_local_devices(params, local_mesh())
    rng = jax.random.fold_in(jax.random.key(config.run.seed), jax.process_index())
    tokens_BxT = generate(config, params, prompt_ids, config.run.sample_batch, rng)
    return write_samples(config, tokens_BxT, vocab, step)
