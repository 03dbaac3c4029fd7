"""Vocabularies: bytes, SentencePiece training (train-vocab) and loading."""

import random

import numpy as np
import pytest

from tvq.config import ConfigError, build
from tvq.data import ByteVocab, load_vocab, make_train_iterator, train_vocab

WORDS = ("the quick brown fox jumps over lazy dog while river runs under old stone bridge "
         "and seven small birds sing").split()


def write_books(folder, count, seed=0):
    folder.mkdir(parents=True)
    rng = random.Random(seed)
    for index in range(count):
        lines = [" ".join(rng.choice(WORDS) for _ in range(12)) for _ in range(40)]
        (folder / f"{index}.txt").write_text("\n".join(lines), encoding="utf-8")


def sp_config(data_dir, vocab_path, **data):
    return build(layers=[{"data": {"dataset": "text", "data_dir": str(data_dir),
                                   "vocab_path": str(vocab_path), "sequence_len": 32,
                                   "update_len": 32, "global_batch_size": 2, **data},
                          "model": {"vocab_size": 80, "block_len": 8, "mem_len": 8}}])


def test_byte_vocab_ids_and_round_trip():
    vocab = ByteVocab()
    assert (vocab.size, vocab.pad_id, vocab.eos_id, vocab.unk_id) == (259, 0, 1, 2)
    assert vocab.encode("A\u00e9") == [65 + 3, 0xC3 + 3, 0xA9 + 3]
    assert vocab.decode([0, 1] + vocab.encode("héllo") + [0]) == "héllo"
    assert load_vocab(build()).size == 259


def test_train_vocab_writes_a_model_that_load_vocab_uses(tmp_path):
    write_books(tmp_path / "data" / "train", 3)
    config = sp_config(tmp_path / "data", tmp_path / "vocabs" / "spm.model")
    assert train_vocab(config) == str(tmp_path / "vocabs" / "spm.model")
    vocab = load_vocab(config)
    assert vocab.size == 80 and (vocab.pad_id, vocab.eos_id, vocab.unk_id) == (0, 1, 2)
    ids = vocab.encode("the lazy dog sings")
    assert len(ids) < len("the lazy dog sings") and min(ids) >= 3
    assert vocab.decode([1] + ids + [0]) == "the lazy dog sings"
    batch = next(make_train_iterator(config))  # text + vocabulary: SentencePiece tokens
    assert batch.shape == (2, 32) and batch.max() < 80


def test_train_vocab_reads_only_the_sample_bound(tmp_path):
    write_books(tmp_path / "data" / "train", 2, seed=1)
    (tmp_path / "data" / "train" / "9.txt").write_text("Q" * 10_000 + "Z" * 10, encoding="utf-8")
    config = sp_config(tmp_path / "data", tmp_path / "spm.model", vocab_sample_bytes=3_000)
    train_vocab(config)
    vocab = load_vocab(config)
    assert vocab.unk_id in vocab.encode("Z")  # the file past the bound was never read


def test_too_large_vocab_is_a_config_error_and_keeps_the_old_model(tmp_path):
    write_books(tmp_path / "data" / "train", 1)
    target = tmp_path / "spm.model"
    target.write_bytes(b"previous")
    config = build(layers=[{"data": {"dataset": "text", "data_dir": str(tmp_path / "data"),
                                     "vocab_path": str(target)},
                            "model": {"vocab_size": 50_000}}])
    with pytest.raises(ConfigError, match="^model.vocab_size"):
        train_vocab(config)
    assert target.read_bytes() == b"previous"


@pytest.mark.parametrize("content, message", [(None, "no such file"),
                                              (b"not a model", "not a SentencePiece model")])
def test_missing_or_broken_vocab_is_a_config_error(tmp_path, content, message):
    path = tmp_path / "spm.model"
    if content is not None:
        path.write_bytes(content)
    config = sp_config(tmp_path, path)
    with pytest.raises(ConfigError, match=f"^data.vocab_path: .*{message}"):
        load_vocab(config)


def test_train_vocab_needs_a_text_dataset():
    with pytest.raises(ConfigError, match="^data.dataset"):
        train_vocab(build(layers=[{"data": {"vocab_path": "/tmp/never-written.model"}}]))


def test_encode_bytes_matches_encode():
    vocab = ByteVocab()
    np.testing.assert_array_equal(vocab.encode_bytes("añb".encode()), vocab.encode("añb"))
