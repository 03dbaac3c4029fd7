"""The grain pipelines: process-count independence, resume, shuffling, eval passes, text files."""

import numpy as np
import pytest

from tvq.config import ConfigError, build
from tvq.data import make_eval_iterator, make_train_iterator

EOS = 1


def text_config(data_dir, **data):
    return build(layers=[{"data": {"dataset": "text", "data_dir": str(data_dir),
                                   "sequence_len": 8, "update_len": 8,
                                   "global_batch_size": 4, **data},
                          "model": {"block_len": 4, "mem_len": 4}}])


def byte_ids(text: bytes) -> list[int]:
    return [b + 3 for b in text]


@pytest.fixture
def text_dir(tmp_path):
    (tmp_path / "train.txt").write_bytes(bytes(range(32, 32 + 80)))  # 10 rows of 8
    docs = tmp_path / "validation"
    docs.mkdir()
    (docs / "a.txt").write_bytes(b"abcdefghij")  # 10 bytes + eos
    (docs / "b.txt").write_bytes(b"xyz")  # 3 bytes + eos
    (docs / ".hidden").write_bytes(b"never read")
    (tmp_path / "test.md").write_bytes(b"0123456789" * 3)
    return tmp_path


def take(iterator, count):
    return [next(iterator) for _ in range(count)]


@pytest.mark.parametrize("processes", [2, 4])
def test_global_batches_do_not_depend_on_process_count(processes):
    config = build(layers=[{"data": {"global_batch_size": 4}}])
    single = take(make_train_iterator(config, 0, 1), 3)
    shards = [take(make_train_iterator(config, p, processes), 3) for p in range(processes)]
    for step, batch in enumerate(single):
        assert batch.shape == (4, config.data.sequence_len) and batch.dtype == np.int32
        np.testing.assert_array_equal(np.concatenate([s[step] for s in shards]), batch)


def test_resume_gives_exactly_the_batches_that_come_next():
    config = build(layers=[{"data": {"global_batch_size": 2}}])
    first = make_train_iterator(config, 1, 2)
    take(first, 5)
    state = first.get_state()
    expected = take(first, 4)
    resumed = make_train_iterator(config, 1, 2)
    resumed.set_state(state)
    for want, got in zip(expected, take(resumed, 4)):
        np.testing.assert_array_equal(got, want)


def test_order_follows_run_seed():
    def first_batch(seed):
        return next(make_train_iterator(build(layers=[{"run": {"seed": seed}}])))

    np.testing.assert_array_equal(first_batch(3), first_batch(3))
    assert not np.array_equal(first_batch(3), first_batch(4))


def test_training_repeats_every_sequence_each_epoch_in_a_new_order(text_dir):
    iterator = make_train_iterator(text_config(text_dir, global_batch_size=5))
    rows = np.concatenate(take(iterator, 4))  # 20 rows: two epochs of the 10 training rows
    stream = np.array(byte_ids(bytes(range(32, 112))), np.int32).reshape(10, 8)
    epochs = rows[:10], rows[10:]
    for epoch in epochs:
        assert sorted(map(tuple, epoch)) == sorted(map(tuple, stream))
    assert not np.array_equal(*epochs)


def test_text_directory_is_documents_each_followed_by_eos(text_dir):
    config = text_config(text_dir, global_batch_size=2)
    batches = list(make_eval_iterator(config, "validation"))
    assert len(batches) == 1
    expected = byte_ids(b"abcdefghij") + [EOS] + byte_ids(b"xyz") + [EOS]
    np.testing.assert_array_equal(batches[0].reshape(-1), expected + [0] * (16 - len(expected)))


def test_eval_pass_covers_the_split_once_with_padded_last_batch_on_every_process(text_dir):
    # test.md: 30 bytes = 4 rows -> one global batch of 6 with 2 pad rows
    config = text_config(text_dir, global_batch_size=6)
    whole = list(make_eval_iterator(config, "test"))
    parts = [list(make_eval_iterator(config, "test", p, 3)) for p in range(3)]
    assert [len(part) for part in parts] == [1, 1, 1] and len(whole) == 1
    np.testing.assert_array_equal(np.concatenate([part[0] for part in parts]), whole[0])
    tokens = whole[0].reshape(-1)
    np.testing.assert_array_equal(tokens[:30], byte_ids(b"0123456789" * 3))
    assert not tokens[30:].any()  # pad tokens and pad rows


def test_eval_is_deterministic_and_honours_eval_steps():
    config = build(layers=[{"run": {"eval_steps": 3}}])
    first = list(make_eval_iterator(config, "test"))
    assert len(first) == 3
    for a, b in zip(first, make_eval_iterator(config, "test")):
        np.testing.assert_array_equal(a, b)
    validation = next(make_eval_iterator(config, "validation"))
    assert not np.array_equal(validation, first[0])


@pytest.mark.parametrize("change, field", [
    (lambda d: None, "data.data_dir"),  # directory missing
    (lambda d: d.mkdir(), "data.data_dir"),  # no train file
    (lambda d: (d.mkdir(), (d / "train.txt").write_text("a"), (d / "train.md").write_text("b")),
     "data.data_dir"),  # ambiguous
    (lambda d: (d.mkdir(), (d / "train").mkdir()), "data.data_dir"),  # empty directory
])
def test_bad_text_data_dir_is_a_one_line_config_error(tmp_path, change, field):
    data_dir = tmp_path / "data"
    change(data_dir)
    with pytest.raises(ConfigError) as error:
        make_train_iterator(text_config(data_dir))
    assert str(error.value).startswith(field) and "\n" not in str(error.value)


def test_batch_must_divide_among_processes_and_split_must_be_known():
    config = build(layers=[{"data": {"global_batch_size": 6}}])
    with pytest.raises(ConfigError, match="^data.global_batch_size"):
        make_train_iterator(config, 0, 4)
    with pytest.raises(ConfigError, match="^split"):
        make_eval_iterator(config, "train")
