"""The embedded default task: byte sequences generated from (split, index), no download, no files.

Bytes are just token ids here; the task is not meant to be readable text. Each sequence draws
its own random key -> digit table (N_KEYS keys), its own random cycle order of the keys and its
filler, and is a run of units of `unit_len` bytes, the units cycling through the keys in that
order (so a key recurs exactly `period = N_KEYS * unit_len` bytes later):

- the first cycle *stores* the table: a unit starts with a pair byte that carries both the key
  and its value (`PAIR_BASE + key * 10 + value`), then the value digit, then filler;
- every later cycle *asks*: a unit starts with the key alone (an uppercase letter), then its
  value digit, then filler (random lowercase letters, never predictable).

`unit_len` is chosen so that period > model.block_len + model.mem_len, the reach of the
uncompressed attention window (block plus memory). So a later value digit (`predictable_mask`)
is fixed by the stored pair, but every earlier occurrence of its key lies beyond the window and
the table is random: only the compressed cache (or full attention) can predict it. Reading it
is a one-hop lookup: the asking key attends to the pair byte with the same key and reads the
value it carries (the first cycle's own digits, right after their pair bytes, teach the model to
read a pair's value).

To measure the compressed cache at work, `tvq val` on this dataset reports `loss_longrange`, the
mean loss at `predictable_mask` positions. Train and evaluate once with model.agg_cache=1 and
once with agg_cache=0 (`tvq train -o A -a 1 && tvq val -o A -a 1`, same with `-a 0`): the first
drives it well below chance (ln 10 nats, a uniform digit), the second stays near chance.
"""

from __future__ import annotations

import numpy as np

from tvq.config import Config
from tvq.data.vocab import NUM_SPECIAL

N_KEYS = 8
KEYS = np.frombuffer(b"ABCDEFGH", np.uint8)
VALUES = np.frombuffer(b"0123456789", np.uint8)
PAIR_BASE = 0x80  # pair bytes PAIR_BASE + key * len(VALUES) + value: outside ASCII
FILLER = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz", np.uint8)
SPLIT_IDS = {"train": 0, "validation": 1, "test": 2}
TRAIN_SEQUENCES = 1 << 20  # distinct training sequences (one epoch)
EVAL_SEQUENCES = 64  # sequences in each of validation and test
CONTENT_SEED = 0x7471  # content is the same for every run; run.seed only shuffles the order


def unit_len(config: Config) -> int:
    """Bytes per unit, so that one cycle of keys spans more than block_len + mem_len."""
    reach = config.model.block_len + config.model.mem_len
    return max(2, reach // N_KEYS + 1)


def make_sequence(split: str, index: int, sequence_len: int, unit: int) -> np.ndarray:
    """Sequence `index` of `split` as byte-vocabulary token ids, int32 [sequence_len]."""
    rng = np.random.default_rng([CONTENT_SEED, SPLIT_IDS[split], index])
    values = rng.integers(0, len(VALUES), N_KEYS)
    order = rng.permutation(N_KEYS)
    n_units = -(-sequence_len // unit)
    keys = order[np.arange(n_units) % N_KEYS]
    units = np.empty((n_units, unit), np.uint8)
    units[:, 0] = KEYS[keys]
    units[:N_KEYS, 0] = PAIR_BASE + keys[:N_KEYS] * len(VALUES) + values[keys[:N_KEYS]]
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
