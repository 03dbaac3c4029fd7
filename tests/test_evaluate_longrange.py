"""val/test on the synthetic task also report loss_longrange: the mean loss at the positions only
the compressed cache can predict (tvq.data.synthetic.predictable_mask)."""

from __future__ import annotations

import jax
import numpy as np
import optax
import pytest

import evalkit
from evalkit import params  # noqa: F401 (fixture)
from tvq import config as cfg
from tvq.data.synthetic import SyntheticSequences, predictable_mask
from tvq.evaluate import evaluate_batches, summarize
from tvq.model import Transformer, initial_state
from tvq.train import shift_right

SEQUENCE_LEN = 64  # room for the synthetic task's first cycle and its later asks


def tiny(block_len: int = 8, update_len: int = 16, **data) -> cfg.Config:
    """The tiny eval config over 64-token synthetic sequences."""
    return evalkit.tiny(block_len, update_len, SEQUENCE_LEN, data=data)


@pytest.fixture(scope="module")
def targets() -> np.ndarray:
    """Two synthetic validation sequences, the second ending early (padded with 0)."""
    rows = SyntheticSequences(tiny(), "validation")
    batch = np.stack([rows[0], rows[1]])
    batch[1, 40:] = 0
    return batch


def per_position_nll(params, targets: np.ndarray) -> np.ndarray:
    """NLL [batch, sequence_len] from one forward pass over each whole sequence as one block."""
    config = tiny(block_len=SEQUENCE_LEN, update_len=SEQUENCE_LEN)
    out = jax.jit(Transformer(config.model).apply)(
        {"params": params}, shift_right(targets), initial_state(config.model, len(targets)))
    return np.asarray(optax.softmax_cross_entropy_with_integer_labels(out.logits, targets))


def test_longrange_totals_sum_the_loss_at_the_predictable_non_pad_positions(params, targets):
    config = tiny()
    totals = evaluate_batches(config, params, [targets], vocab=None)
    selected = predictable_mask(config)[None, :] & (targets != 0)
    assert 0 < totals.longrange_tokens == selected.sum() < totals.tokens
    assert totals.longrange_nats == pytest.approx(
        float(per_position_nll(params, targets)[selected].sum()), rel=1e-5)

    summary = summarize(config, "validation", totals, step=3)
    assert summary["loss_longrange"] == pytest.approx(
        totals.longrange_nats / totals.longrange_tokens)
    assert summary["loss"] == pytest.approx(totals.nats / totals.tokens)


def test_other_datasets_report_no_longrange_loss(params, targets):
    config = tiny(dataset="text", data_dir="/unused")
    totals = evaluate_batches(config, params, [targets], vocab=None)
    assert totals.longrange_tokens == 0 and totals.tokens == (targets != 0).sum()
    assert "loss_longrange" not in summarize(config, "test", totals, step=0)
