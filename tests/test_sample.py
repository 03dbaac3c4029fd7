"""sample: the nucleus filter, incremental decoding with the recurrent state, and the outputs."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from tvq import config as cfg
from tvq.data import ByteVocab
from tvq.sample import (IMAGE_LEN, check_sample_config, generate, generate_steps,
                        nucleus_filter, write_samples)
from tvq.model import Transformer, initial_state
from tvq.train import init_params

PROMPT = [40, 41, 42, 43, 44]  # forced tokens at positions 0..4


def tiny(**run) -> cfg.Config:
    """A 1-layer model with 8-token blocks, an 8-token cache and the aggregated cache."""
    return cfg.replace(
        cfg.build(), model=dict(d_model=32, d_k=16, d_v=32, n_layer=1, n_code=8, block_len=8,
                                mem_len=8),
        data=dict(sequence_len=32, update_len=16),
        run={"sample_len": 19, "p_nucleus": 0.9, **run})


@pytest.fixture(scope="module")
def params():
    config = tiny()
    return jax.jit(lambda: init_params(config, Transformer(config.model),
                                       jax.random.PRNGKey(0)))()


def nucleus_reference(logits: np.ndarray, p: float) -> np.ndarray:
    """Kept tokens: the fewest most likely ones whose probabilities sum to at least p."""
    probs = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    order = np.argsort(-probs)
    count = int(np.searchsorted(np.cumsum(probs[order]), p)) + 1
    kept = np.zeros(len(logits), bool)
    kept[order[:count]] = True
    return kept


def test_nucleus_keeps_the_smallest_set_reaching_p():
    logits = np.random.default_rng(0).normal(size=(4, 50)).astype(np.float32) * 2
    for p in (0.3, 0.6, 0.9, 0.99):
        kept = np.isfinite(np.asarray(nucleus_filter(jnp.asarray(logits), p)))
        for row in range(len(logits)):
            np.testing.assert_array_equal(kept[row], nucleus_reference(logits[row], p))


def test_nucleus_small_p_is_greedy_and_p_one_keeps_all():
    logits = jnp.asarray(np.random.default_rng(1).normal(size=(3, 20)), jnp.float32)
    greedy = np.isfinite(np.asarray(nucleus_filter(logits, 1e-6)))
    assert (greedy.sum(-1) == 1).all()
    assert (greedy.argmax(-1) == np.asarray(logits).argmax(-1)).all()
    np.testing.assert_array_equal(np.asarray(nucleus_filter(logits, 1.0)), np.asarray(logits))


@pytest.mark.parametrize("attention", ["vq", "full"])
def test_incremental_logits_equal_a_full_forward_pass(params, attention):
    # One 32-token update window: full attention sees all of it, as in training.
    config = cfg.replace(tiny(), model={"attention": attention}, data={"update_len": 32})
    steps = list(generate_steps(config, params, PROMPT, 2, jax.random.key(3)))
    tokens = np.stack([np.asarray(token) for token, _ in steps], axis=1)
    logits = np.stack([np.asarray(step_logits) for _, step_logits in steps], axis=1)
    assert tokens.shape == (2, len(PROMPT) + 19)
    assert (tokens[:, :len(PROMPT)] == PROMPT).all()

    # Position t's input is the token at t - 1 (pad 0 first); 24 tokens fill three blocks.
    inputs = np.pad(tokens[:, :-1], ((0, 0), (1, 0)))
    full = Transformer(config.model).apply({"params": params}, inputs,
                                           initial_state(config.model, 2))
    np.testing.assert_allclose(logits, np.asarray(full.logits), atol=1e-4, rtol=1e-4)


def test_same_seed_same_samples_other_seed_differs(params):
    config = tiny()
    first, again, other = (generate(config, params, PROMPT, 2, jax.random.key(seed))
                           for seed in (5, 5, 6))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first[:, len(PROMPT):], other[:, len(PROMPT):])


def test_text_samples_are_written_decoded(tmp_path):
    config = tiny(out_dir=str(tmp_path), seed=4)
    vocab = ByteVocab()
    tokens = np.array([vocab.encode("hello, world"), vocab.encode("second")[:6] + [0] * 6])
    paths = write_samples(config, tokens, vocab, step=12)
    assert [open(path, encoding="utf-8").read() for path in paths] == ["hello, world", "second"]
    assert all(path.startswith(str(tmp_path / "samples" / "step12_seed4_")) for path in paths)


def test_imagenet64_samples_are_64x64_rgb_pngs(tmp_path):
    config = cfg.replace(tiny(out_dir=str(tmp_path), sample_len=IMAGE_LEN),
                         data={"dataset": "imagenet64", "data_dir": str(tmp_path),
                               "sequence_len": IMAGE_LEN, "update_len": IMAGE_LEN // 8})
    check_sample_config(config)
    tokens = np.random.default_rng(2).integers(0, 259, size=(2, IMAGE_LEN))
    paths = write_samples(config, tokens, ByteVocab(), step=0)

    assert len(paths) == 2 and all(path.endswith(".png") for path in paths)
    for path, row in zip(paths, tokens):
        image = Image.open(path)
        assert (image.size, image.mode) == ((64, 64), "RGB")
        pixels = np.clip(row - 3, 0, 255).reshape(64, 64, 3)
        np.testing.assert_array_equal(np.asarray(image), pixels)


@pytest.mark.parametrize("run, field", [({"prompt": "a cat"}, "run.prompt"),
                                        ({"sample_len": 100}, "run.sample_len")])
def test_imagenet64_rejects_prompts_and_partial_images(tmp_path, run, field):
    config = cfg.replace(tiny(**run), data={"dataset": "imagenet64", "data_dir": str(tmp_path),
                                            "sequence_len": IMAGE_LEN,
                                            "update_len": IMAGE_LEN // 8})
    with pytest.raises(cfg.ConfigError, match=f"^{field}: ") as error:
        check_sample_config(config)
    assert "\n" not in str(error.value)
