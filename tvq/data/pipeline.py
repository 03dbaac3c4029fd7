"""The grain input pipelines: deterministic, shuffled by run.seed, sharded by process.

Global batch b is the same sequences whatever the process count, and process p gets its rows
[p*L, (p+1)*L) (L = global_batch_size // process_count), so a run on P processes sees exactly
the data of a 1-process run. Iterator state (`get_state` / `set_state`) restores the position.

Sequence datasets (synthetic, text, enwik8, imagenet64) are random access: rows are shuffled
per epoch and each process reads only its own rows. Document datasets (pg19) shuffle books per
epoch, pack them in that order, and every process packs the whole global batch and keeps its
rows (tokenization is repeated on each process; a global batch holds consecutive text).
"""

from __future__ import annotations

import functools

import grain
import numpy as np

from tvq.config import Config, ConfigError
from tvq.data.packing import PackIterDataset
from tvq.data.sources import SplitData, split_data
from tvq.data.vocab import PAD_ID, load_vocab

EVAL_SPLITS = ("validation", "test")
READ_OPTIONS = grain.ReadOptions(num_threads=4, prefetch_buffer_size=8)


def local_batch_size(config: Config, process_count: int) -> int:
    """Rows of each global batch that one process gets."""
    size = config.data.global_batch_size
    if process_count < 1 or size % process_count:
        raise ConfigError(f"data.global_batch_size: got {size}; allowed: a multiple of the "
                          f"process count ({process_count})")
    return size // process_count


def _local_rows(batch: np.ndarray, global_size: int, first: int, count: int) -> np.ndarray:
    """Rows [first, first + count) of a global batch padded with pad rows to global_size."""
    padded = np.full((global_size, batch.shape[1]), PAD_ID, np.int32)
    padded[:len(batch)] = batch
    return padded[first:first + count]


def _load(config: Config, split: str, process_index: int) -> SplitData:
    data = split_data(config, split, load_vocab(config), process_index)
    if len(data.rows) == 0:
        raise ConfigError(f"data.data_dir: the {split} split of {config.data.dataset} in "
                          f"{config.data.data_dir!r} is empty")
    return data


def make_train_iterator(config: Config, process_index: int = 0,
                        process_count: int = 1) -> grain.DatasetIterator:
    """Endless training batches: np.int32 [global_batch_size // process_count, sequence_len]."""
    local = local_batch_size(config, process_count)
    data = _load(config, "train", process_index)
    epochs = data.rows.shuffle(seed=config.run.seed).repeat()
    if not data.packed:
        batches = epochs.batch(local, drop_remainder=True)
        return iter(batches[process_index::process_count].to_iter_dataset(READ_OPTIONS))
    rows = PackIterDataset(epochs.to_iter_dataset(READ_OPTIONS), config.data.sequence_len,
                           PAD_ID)
    batches = rows.batch(config.data.global_batch_size, drop_remainder=True)
    return iter(batches.map(functools.partial(
        _local_rows, global_size=config.data.global_batch_size,
        first=process_index * local, count=local)))


def make_eval_iterator(config: Config, split: str, process_index: int = 0,
                       process_count: int = 1) -> grain.DatasetIterator:
    """One unshuffled pass over `split` (at most run.eval_steps batches when it is > 0):
    np.int32 [local batch, sequence_len]; the last global batch is padded with pad rows, so
    every process gets the same number of batches."""
    if split not in EVAL_SPLITS:
        raise ConfigError(f"split: got {split!r}; allowed: {', '.join(EVAL_SPLITS)}")
    local = local_batch_size(config, process_count)
    size = config.data.global_batch_size
    data = _load(config, split, process_index)
    steps = config.run.eval_steps
    if not data.packed:
        rows, count = data.rows, len(data.rows)
        blank = np.zeros((config.data.sequence_len,), np.int32)
        padded = grain.MapDataset.range(-(-count // size) * size).map(
            lambda index: rows[index] if index < count else blank)
        batches = padded.batch(local)[process_index::process_count]
        return iter((batches[:steps] if steps else batches).to_iter_dataset(READ_OPTIONS))
    packed = PackIterDataset(data.rows.to_iter_dataset(READ_OPTIONS),
                             config.data.sequence_len, PAD_ID)
    batches = packed.batch(size).map(functools.partial(
        _local_rows, global_size=size, first=process_index * local, count=local))
    return iter(grain.experimental.LimitIterDataset(batches, steps) if steps else batches)
