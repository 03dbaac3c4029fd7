"""The synthetic default task: deterministic, and structured beyond the attention window."""

import numpy as np

from tvq.config import build
from tvq.data import make_train_iterator
from tvq.data.synthetic import N_KEYS, SyntheticSequences, predictable_mask, unit_len


def test_same_index_same_sequence_and_sequences_differ():
    config = build()
    first, again = SyntheticSequences(config, "train"), SyntheticSequences(config, "train")
    np.testing.assert_array_equal(first[7], again[7])
    assert not np.array_equal(first[7], first[8])
    assert not np.array_equal(first[7], SyntheticSequences(config, "validation")[7])
    assert first[7].min() >= 3 and first[7].max() < config.model.vocab_size


def test_predictable_positions_repeat_from_beyond_the_uncompressed_window():
    for block_len, mem_len in ((32, 32), (16, 48), (64, 128)):
        config = build(layers=[{"model": {"block_len": block_len, "mem_len": mem_len},
                                "data": {"sequence_len": 1024, "update_len": 512}}])
        reach = block_len + mem_len
        period = N_KEYS * unit_len(config)
        assert period >= reach
        mask = predictable_mask(config)
        assert mask.sum() >= 0.05 * len(mask)
        for sequence in (SyntheticSequences(config, "test")[i] for i in range(2)):
            values = np.flatnonzero(mask)
            np.testing.assert_array_equal(sequence[values], sequence[values - period])
            # the value's key never occurs earlier inside the window a query sees: only the
            # compressed cache (or full attention) holds the pair
            for t in values[:20]:
                key = sequence[t - 1]
                assert key not in sequence[max(0, t - reach + 1):t - 1]
                assert sequence[t - 1 - period] == key


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
