"""Transformer-VQ in Flax Linen: VQ keys, block-recurrent attention with caches, full baseline.

    model = Transformer(config.model)
    state = initial_state(config.model, batch_size)
    variables = model.init({"params": k1, "dropout": k2}, inputs, state, deterministic=True)
    out = model.apply(variables, inputs, state, deterministic=False, rngs={"dropout": k3})
"""

from tvq.model.state import State, initial_state
from tvq.model.transformer import ModelOutput, Transformer, codebook_mask

__all__ = ["ModelOutput", "State", "Transformer", "codebook_mask", "initial_state"]
