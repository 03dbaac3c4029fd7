"""The synthetic default task: deterministic, and structured beyond the attention window."""

import numpy as np

from tvq.config import build
from tvq.data import make_train_iterator
from tvq.data.synthetic import (KEYS, N_KEYS, PAIR_BASE, VALUES, SyntheticSequences,
                                predictable_mask, unit_len)
from tvq.data.vocab import NUM_SPECIAL

PAIRS = PAIR_BASE + NUM_SPECIAL + np.arange(N_KEYS * len(VALUES))  # token ids of the pair bytes


def pair_key_value(token: int) -> tuple[int, int]:
    """(key index, value digit) carried by a pair byte's token id."""
    return divmod(int(token) - PAIR_BASE - NUM_SPECIAL, len(VALUES))


def test_same_index_same_sequence_and_sequences_differ():
    config = build()
    first, again = SyntheticSequences(config, "train"), SyntheticSequences(config, "train")
    np.testing.assert_array_equal(first[7], again[7])
    assert not np.array_equal(first[7], first[8])
    assert not np.array_equal(first[7], SyntheticSequences(config, "validation")[7])
    assert first[7].min() >= 3 and first[7].max() < config.model.vocab_size


def test_first_cycle_stores_every_key_once_as_a_pair_with_its_value():
    config = build()
    unit = unit_len(config)
    for sequence in (SyntheticSequences(config, "train")[i] for i in range(3)):
        stored = [pair_key_value(sequence[i * unit]) for i in range(N_KEYS)]
        assert sorted(key for key, _ in stored) == list(range(N_KEYS))
        assert [int(sequence[i * unit + 1]) - NUM_SPECIAL for i in range(N_KEYS)] == [
            int(VALUES[value]) for _, value in stored]
        assert np.isin(sequence, PAIRS).sum() == N_KEYS  # pairs occur in the first cycle only


def test_predictable_values_are_stored_only_beyond_the_uncompressed_window():
    for block_len, mem_len in ((32, 32), (16, 48), (64, 128)):
        config = build(layers=[{"model": {"block_len": block_len, "mem_len": mem_len},
                                "data": {"sequence_len": 1024, "update_len": 512}}])
        reach = block_len + mem_len
        unit = unit_len(config)
        assert N_KEYS * unit > reach
        mask = predictable_mask(config)
        assert mask.sum() == -(-(len(mask) - N_KEYS * unit) // unit)  # one value per later unit
        for sequence in (SyntheticSequences(config, "test")[i] for i in range(2)):
            for t in np.flatnonzero(mask):
                key = int(np.flatnonzero(KEYS + NUM_SPECIAL == sequence[t - 1])[0])
                key_pairs = PAIRS[key * len(VALUES):(key + 1) * len(VALUES)]
                (stored_at,) = np.flatnonzero(np.isin(sequence, key_pairs))
                # the value is the one stored with the asking key ...
                assert int(VALUES[pair_key_value(sequence[stored_at])[1]]) + NUM_SPECIAL == \
                    sequence[t]
                # ... and every earlier mention of the key (the pair, or an earlier ask) and
                # the digit after it lie before the window that predicts position t (targets
                # t - reach .. t - 1)
                mentions = np.isin(sequence[:t - 1], [*key_pairs, KEYS[key] + NUM_SPECIAL])
                assert np.flatnonzero(mentions).max() + 1 < t - reach


def test_each_sequence_draws_its_own_independent_value_table():
    config = build()
    unit = unit_len(config)
    tables = np.empty((400, N_KEYS), np.int64)
    for index in range(len(tables)):
        sequence = SyntheticSequences(config, "train")[index]
        for key, value in (pair_key_value(sequence[i * unit]) for i in range(N_KEYS)):
            tables[index, key] = value
    # each key's value is near uniform over the digits, and two keys agree about 1 time in 10:
    # the values inside a window say nothing about another key's value
    assert all(np.bincount(column, minlength=10).min() > 15 for column in tables.T)
    assert 0.05 < np.mean(tables[:, 0] == tables[:, 1]) < 0.15


def test_filler_carries_no_copy():
    config = build()
    sequence = SyntheticSequences(config, "train")[0]
    unit = unit_len(config)
    period = N_KEYS * unit
    position = np.arange(config.data.sequence_len)
    filler = position[(position >= period) & (position % unit >= 2)]
    assert not predictable_mask(config)[filler].any()
    assert np.mean(sequence[filler] == sequence[filler - period]) < 0.2


def test_default_training_batches_are_synthetic_without_any_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    batch = next(make_train_iterator(build()))
    assert batch.shape == (8, 256)
    assert list(tmp_path.iterdir()) == []
