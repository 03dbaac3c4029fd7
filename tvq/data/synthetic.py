"""The embedded default task: byte text generated from (split, index), no download, no files.

Each sequence is a run of units of `unit_len` bytes: an uppercase key, its digit value, then
lowercase filler. Every sequence draws its own random key -> digit table (16 keys), its own
random cycle order of the keys and its filler. Units cycle through the keys in that order, so a
key and its value recur exactly `period = 16 * unit_len` bytes later, and `unit_len` is chosen
so that period >= model.block_len + model.mem_len: the reach of the uncompressed attention
window (block plus memory). Hence:

- filler bytes are random (log2(26) bits each), never predictable;
- the first cycle's keys and values are random;
- a later value (`predictable_mask`) equals the byte one period back; its key's previous
  occurrence is out of the window's reach and the table is random, so only the compressed
  cache (or full attention) can predict it. (Later keys follow the cycle order too, but may be
  partly guessed by elimination from the keys inside the window, so the mask leaves them out.)

To measure the compressed cache at work, compare the mean loss at `predictable_mask` positions
of a model with model.agg_cache=1 against one with agg_cache=0: the first can drive it towards
0, the second stays near chance (ln 10 nats, a uniform digit).
"""

from __future__ import annotations

import numpy as np

from tvq.config import Config
from tvq.data.vocab import NUM_SPECIAL

N_KEYS = 16
KEYS = np.frombuffer(b"ABCDEFGHIJKLMNOP", np.uint8)
VALUES = np.frombuffer(b"0123456789", np.uint8)
FILLER = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz", np.uint8)
SPLIT_IDS = {"train": 0, "validation": 1, "test": 2}
TRAIN_SEQUENCES = 1 << 20  # distinct training sequences (one epoch)
EVAL_SEQUENCES = 64  # sequences in each of validation and test
CONTENT_SEED = 0x7471  # content is the same for every run; run.seed only shuffles the order


def unit_len(config: Config) -> int:
    """Bytes per unit, so that one cycle of keys spans at least block_len + mem_len."""
    reach = config.model.block_len + config.model.mem_len
    return max(2, -(-reach // N_KEYS))


def make_sequence(split: str, index: int, sequence_len: int, unit: int) -> np.ndarray:
    """Sequence `index` of `split` as byte-vocabulary token ids, int32 [sequence_len]."""
    rng = np.random.default_rng([CONTENT_SEED, SPLIT_IDS[split], index])
    values = rng.integers(0, len(VALUES), N_KEYS)
    order = rng.permutation(N_KEYS)
    n_units = -(-sequence_len // unit)
    keys = order[np.arange(n_units) % N_KEYS]
    units = np.empty((n_units, unit), np.uint8)
    units[:, 0] = KEYS[keys]
    units[:, 1] = VALUES[values[keys]]
    units[:, 2:] = FILLER[rng.integers(0, len(FILLER), (n_units, unit - 2))]
    return units.reshape(-1)[:sequence_len].astype(np.int32) + NUM_SPECIAL


def predictable_mask(config: Config) -> np.ndarray:
    """bool [sequence_len]: the value positions only the compressed cache can predict (see
    the module docstring)."""
    unit = unit_len(config)
    position = np.arange(config.data.sequence_len)
    return (position >= N_KEYS * unit) & (position % unit == 1)


class SyntheticSequences:
    """Random-access source of one split's sequences (grain MapDataset.source compatible)."""

    def __init__(self, config: Config, split: str):
        self._split = split
        self._sequence_len = config.data.sequence_len
        self._unit = unit_len(config)
        self._length = TRAIN_SEQUENCES if split == "train" else EVAL_SEQUENCES

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: int) -> np.ndarray:
        return make_sequence(self._split, index, self._sequence_len, self._unit)
