"""Shared helpers for the evaluation tests: a tiny config and its freshly initialized params."""

from __future__ import annotations

import jax
import pytest

from tvq import config as cfg
from tvq.model import Transformer
from tvq.train import init_params

TINY_MODEL = dict(d_model=32, d_k=16, d_v=32, n_layer=1, n_code=8, mem_len=0)


def tiny(block_len: int = 8, update_len: int = 16, sequence_len: int = 32,
         **sections: dict) -> cfg.Config:
    """The cpu preset shrunk to a 1-layer model over short sequences, plus section overrides."""
    data = {"sequence_len": sequence_len, "update_len": update_len, "global_batch_size": 2,
            **sections.pop("data", {})}
    return cfg.replace(cfg.build(), model={**TINY_MODEL, "block_len": block_len}, data=data,
                       **sections)


@pytest.fixture(scope="module")
def params():
    """Fresh params of the tiny model (they do not depend on the sequence length)."""
    config = tiny()
    return jax.jit(lambda: init_params(config, Transformer(config.model),
                                       jax.random.PRNGKey(0)))()
