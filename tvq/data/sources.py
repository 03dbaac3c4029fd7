"""Each dataset's splits as grain MapDatasets: random-access sequences, or documents to pack."""

from __future__ import annotations

import dataclasses
from typing import Iterator

import grain
import numpy as np

from tvq.config import Config, ConfigError
from tvq.data import synthetic, text
from tvq.data.tfds_builders import IMAGE_SHAPE, prepared_builder
from tvq.data.vocab import NUM_SPECIAL, Vocab

SPLITS = ("train", "validation", "test")
IMAGENET64_TRAIN_EXAMPLES = 1_200_000  # the original: the rest of the official train is validation
IMAGENET64_TFDS_SPLITS = {"train": f"train[:{IMAGENET64_TRAIN_EXAMPLES}]",
                          "validation": f"train[{IMAGENET64_TRAIN_EXAMPLES}:]",
                          "test": "validation"}  # ImageNet has no public test set


@dataclasses.dataclass(frozen=True)
class SplitData:
    """One split: `rows` are int32 [sequence_len] sequences when `packed` is False, else
    int32 token arrays of documents (eos appended) to be packed in order."""

    rows: grain.MapDataset
    packed: bool


class StreamSequences:
    """A 1-D token stream cut into sequence_len rows; the last row padded with pad (0)."""

    def __init__(self, tokens: np.ndarray, sequence_len: int):
        self._tokens = tokens
        self._sequence_len = sequence_len

    def __len__(self) -> int:
        return -(-len(self._tokens) // self._sequence_len)

    def __getitem__(self, index: int) -> np.ndarray:
        row = np.zeros((self._sequence_len,), np.int32)
        piece = self._tokens[index * self._sequence_len:(index + 1) * self._sequence_len]
        row[:len(piece)] = piece
        return row


class ImageSequences:
    """Images flattened (HWC) as bytes offset by the specials, sequence_len / 12288 per row."""

    def __init__(self, images: grain.RandomAccessDataSource, sequence_len: int):
        self._images = images
        self._per_row = sequence_len // int(np.prod(IMAGE_SHAPE))
        self._sequence_len = sequence_len

    def __len__(self) -> int:
        return -(-len(self._images) // self._per_row)

    def __getitem__(self, index: int) -> np.ndarray:
        first = index * self._per_row
        pixels = [self._images[i]["image"].reshape(-1)
                  for i in range(first, min(first + self._per_row, len(self._images)))]
        row = np.zeros((self._sequence_len,), np.int32)
        flat = np.concatenate(pixels).astype(np.int32) + NUM_SPECIAL
        row[:len(flat)] = flat
        return row


def _with_eos(tokens: np.ndarray, vocab: Vocab) -> np.ndarray:
    return np.append(tokens, np.int32(vocab.eos_id)).astype(np.int32)


def _book_bytes(book: dict) -> bytes:
    """A PG-19 record's text (bytes from array_record; tfds' mock data gives str)."""
    text = book["book_text"]
    return text.encode("utf-8") if isinstance(text, str) else text


def _text_stream(config: Config, split: str, vocab: Vocab) -> np.ndarray:
    """A text split as one token stream: a directory's files each followed by eos."""
    files, separate = text.split_files(config.data.data_dir, split)
    docs = [vocab.encode_bytes(file.read_bytes()) for file in files]
    if separate:
        docs = [_with_eos(doc, vocab) for doc in docs]
    dtype = np.uint16 if vocab.size <= np.iinfo(np.uint16).max + 1 else np.int32
    return np.concatenate(docs).astype(dtype)


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ConfigError(f"split: got {split!r}; allowed: {', '.join(SPLITS)}")


def split_data(config: Config, split: str, vocab: Vocab, process_index: int = 0) -> SplitData:
    """The rows of one split of config.data.dataset."""
    _check_split(split)
    d = config.data
    if d.dataset == "synthetic":
        return SplitData(grain.MapDataset.source(synthetic.SyntheticSequences(config, split)),
                         False)
    if d.dataset == "text":
        stream = _text_stream(config, split, vocab)
        return SplitData(grain.MapDataset.source(StreamSequences(stream, d.sequence_len)), False)
    builder = prepared_builder(d.dataset, d.data_dir, process_index)
    if d.dataset == "enwik8":
        records = builder.as_data_source(split=split)
        stream = np.concatenate([records[i]["bytes"] for i in range(len(records))])
        tokens = stream.astype(np.uint16) + NUM_SPECIAL
        return SplitData(grain.MapDataset.source(StreamSequences(tokens, d.sequence_len)), False)
    if d.dataset == "imagenet64":
        images = builder.as_data_source(split=IMAGENET64_TFDS_SPLITS[split])
        return SplitData(grain.MapDataset.source(ImageSequences(images, d.sequence_len)), False)
    books = grain.MapDataset.source(builder.as_data_source(split=split))
    return SplitData(books.map(lambda book: _with_eos(vocab.encode_bytes(_book_bytes(book)),
                                                      vocab)), True)


def train_texts(config: Config) -> Iterator[bytes]:
    """The training split's documents as raw text, in order (for vocabulary training)."""
    d = config.data
    if d.dataset == "text":
        yield from text.iter_texts(d.data_dir, "train")
    elif d.dataset == "pg19":
        books = prepared_builder(d.dataset, d.data_dir).as_data_source(split="train")
        for index in range(len(books)):
            yield _book_bytes(books[index])
    else:
        raise ConfigError(f"data.dataset: got {d.dataset!r}; allowed for train-vocab: pg19, text")
