"""The tfds builders, prepared for real from small local source files in the manual dir
(`<data_dir>/downloads/manual/`), then read through the pipelines."""

import functools
import http.server
import io
import threading
import zipfile

import numpy as np
import pytest
import tensorflow_datasets as tfds

from tvq.config import ConfigError, build
from tvq.data import load_vocab, make_eval_iterator, make_train_iterator, train_vocab
from tvq.data import sources, tfds_builders
from tvq.data.tfds_builders import TvqEnwik8

EOS = 1


def manual_dir(data_dir):
    path = data_dir / "downloads" / "manual"
    path.mkdir(parents=True)
    return path


def config_for(dataset, data_dir, model=None, **data):
    return build(layers=[{"data": {"dataset": dataset, "data_dir": str(data_dir), **data},
                          "model": model or {}}])


def rows_of(iterator):
    return np.concatenate(list(iterator))


with tfds.core.registered.skip_registration():
    class SmallEnwik8(TvqEnwik8):
        """enwik8's builder with the split points scaled down."""

        SPLIT_AT = (2_000, 2_500)
        CHUNK_BYTES = 500


def test_enwik8_keeps_the_original_split_points():
    assert TvqEnwik8.SPLIT_AT == (90_000_000, 95_000_000)
    assert all(point % TvqEnwik8.CHUNK_BYTES == 0 for point in TvqEnwik8.SPLIT_AT)


@pytest.fixture
def web_root(tmp_path):
    """A local HTTP server over a folder: the builders' real download path, offline."""
    root = tmp_path / "web"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()


def test_enwik8_splits_are_consecutive_byte_ranges_offset_by_3(tmp_path, monkeypatch, web_root):
    folder, url = web_root
    monkeypatch.setitem(tfds_builders.BUILDERS, "enwik8", SmallEnwik8)
    monkeypatch.setattr(SmallEnwik8, "URL", url + "enwik8.zip")
    raw = np.random.default_rng(0).integers(0, 256, 3_000, dtype=np.uint8)
    with zipfile.ZipFile(folder / "enwik8.zip", "w") as archive:
        archive.writestr("enwik8", raw.tobytes())
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    config = config_for("enwik8", data_dir, sequence_len=64, update_len=64,
                        global_batch_size=4)
    for split, part in (("validation", raw[2_000:2_500]), ("test", raw[2_500:])):
        tokens = rows_of(make_eval_iterator(config, split)).reshape(-1)
        np.testing.assert_array_equal(tokens[:len(part)], part.astype(np.int32) + 3)
        assert not tokens[len(part):].any()
    iterator = make_train_iterator(config)
    train = rows_of(next(iterator) for _ in range(8))  # 32 rows: one epoch
    expected = np.zeros(32 * 64, np.int32)
    expected[:2_000] = raw[:2_000].astype(np.int32) + 3
    assert sorted(map(tuple, train)) == sorted(map(tuple, expected.reshape(32, 64)))


def write_pg19(root):
    rng = np.random.default_rng(1)
    words = np.array("a river ran by the old mill and the miller sang of wind and rain".split())
    books = {}
    for split, ids in (("train", range(100, 106)), ("validation", (200, 201)), ("test", (300,))):
        (root / split).mkdir()
        for book_id in ids:
            lines = int(rng.integers(3, 9))
            text = "\n".join(" ".join(rng.choice(words, 10)) for _ in range(lines))
            (root / split / f"{book_id}.txt").write_text(text + "\n", encoding="utf-8")
            books.setdefault(split, []).append(text)
    return books


@pytest.fixture(scope="module")
def pg19(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("pg19")
    books = write_pg19(manual_dir(data_dir))
    config = config_for("pg19", data_dir, {"vocab_size": 60, "block_len": 8, "mem_len": 8},
                        vocab_path=str(data_dir / "spm.model"), sequence_len=16, update_len=16,
                        global_batch_size=4)
    train_vocab(config)
    return config, books


def test_pg19_books_each_end_with_eos(pg19):
    config, books = pg19
    vocab = load_vocab(config)
    tokens = rows_of(make_eval_iterator(config, "validation")).reshape(-1)
    ends = np.flatnonzero(tokens == EOS)
    assert len(ends) == 2 and not tokens[ends[-1] + 1:].any()
    decoded = [vocab.decode(doc) for doc in np.split(tokens[:ends[-1]], ends[:-1] + 1)]
    # SentencePiece (as in the original) normalises newlines to spaces
    assert sorted(decoded) == sorted(" ".join(book.split()) for book in books["validation"])


def test_pg19_training_resumes_and_shards_exactly(pg19):
    config, _ = pg19
    straight = make_train_iterator(config)
    for _ in range(3):
        next(straight)
    state = straight.get_state()
    expected = [next(straight) for _ in range(6)]
    resumed = make_train_iterator(config)
    resumed.set_state(state)
    halves = [make_train_iterator(config, p, 2) for p in range(2)]
    for half in halves:
        for _ in range(3):
            next(half)
    for want in expected:
        np.testing.assert_array_equal(next(resumed), want)
        np.testing.assert_array_equal(np.concatenate([next(h) for h in halves]), want)


def planar_npz(images):
    buffer = io.BytesIO()
    planar = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
    np.savez(buffer, data=planar, labels=np.arange(1, len(images) + 1))
    return buffer.getvalue()


def write_imagenet(root, rng):
    images = rng.integers(0, 256, (10, 64, 64, 3), dtype=np.uint8)
    for name, part in (("Imagenet64_train_part1_npz.zip", images[:4]),
                       ("Imagenet64_train_part2_npz.zip", images[4:7]),
                       ("Imagenet64_val_npz.zip", images[7:])):
        with zipfile.ZipFile(root / name, "w") as archive:
            archive.writestr(name.replace("_npz.zip", "") + "/batch.npz", planar_npz(part))
    return images


def test_imagenet64_rows_are_hwc_pixels_offset_by_3_with_the_original_splits(
        tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "IMAGENET64_TFDS_SPLITS",
                        {"train": "train[:5]", "validation": "train[5:]", "test": "validation"})
    images = write_imagenet(manual_dir(tmp_path), np.random.default_rng(2))
    flat = images.reshape(10, -1).astype(np.int32) + 3
    config = config_for("imagenet64", tmp_path, sequence_len=12_288, update_len=4_096,
                        global_batch_size=2)
    validation = rows_of(make_eval_iterator(config, "validation"))
    test = rows_of(make_eval_iterator(config, "test"))
    iterator = make_train_iterator(config)
    train = rows_of(next(iterator) for _ in range(5))  # 10 rows: two epochs
    as_set = lambda rows: {row.tobytes() for row in rows if row.any()}  # noqa: E731
    assert as_set(test) == as_set(flat[7:])  # the official validation set
    assert len(as_set(validation)) == 2 and len(as_set(train)) == 5
    assert as_set(validation) | as_set(train) == as_set(flat[:7])  # the official train set


def test_missing_data_dir_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="^data.data_dir: no such directory"):
        make_train_iterator(config_for("enwik8", tmp_path / "absent"))


def test_unpreparable_dataset_is_a_config_error(tmp_path, monkeypatch, web_root):
    monkeypatch.setattr(TvqEnwik8, "URL", web_root[1] + "missing.zip")
    with pytest.raises(ConfigError, match="^data.data_dir: could not prepare tvq_enwik8"):
        make_train_iterator(config_for("enwik8", tmp_path))


@pytest.mark.parametrize("dataset, data, top", [
    ("enwik8", {}, 259),
    ("imagenet64", {"sequence_len": 12_288, "update_len": 4_096}, 259),
    ("pg19", {"vocab_path": "spm.model"}, 40),
])
def test_builders_feed_the_pipelines_under_tfds_mock_data(tmp_path, dataset, data, top):
    config = config_for(dataset, tmp_path, {"vocab_size": top}, global_batch_size=2,
                        **{k: str(tmp_path / v) if k == "vocab_path" else v
                           for k, v in data.items()})
    with tfds.testing.mock_data(num_examples=6, policy=tfds.testing.MockPolicy.USE_CODE):
        if dataset == "pg19":
            train_vocab(config)
        batch = next(make_train_iterator(config, 0, 2))
        passes = [list(make_eval_iterator(config, split)) for split in ("validation", "test")]
    assert batch.shape == (1, config.data.sequence_len) and batch.dtype == np.int32
    for batches in passes:
        assert batches and all(b.shape == (2, config.data.sequence_len) for b in batches)
    rows = np.concatenate([batch] + [b for p in passes for b in p])
    assert rows.max() < top and rows.any()
    if dataset == "imagenet64":
        assert rows[rows > 0].min() >= 3
