"""Vocabularies: the byte vocabulary and SentencePiece models, both with pad 0, eos 1, unk 2."""

from __future__ import annotations

import abc
from typing import Sequence

import numpy as np
import sentencepiece as spm
from etils import epath

from tvq.config import BYTE_VOCAB_SIZE, Config, ConfigError

PAD_ID, EOS_ID, UNK_ID = 0, 1, 2
NUM_SPECIAL = 3  # byte b is token b + NUM_SPECIAL
VOCAB_DATASETS = ("pg19", "text")  # datasets that use data.vocab_path; the others are bytes


class Vocab(abc.ABC):
    """Maps text to token ids and back; ids 0, 1, 2 are pad, eos and unk."""

    pad_id = PAD_ID
    eos_id = EOS_ID
    unk_id = UNK_ID

    @property
    @abc.abstractmethod
    def size(self) -> int:
        """Number of token ids."""

    @abc.abstractmethod
    def encode(self, text: str) -> list[int]:
        """Token ids of `text` (no eos added)."""

    @abc.abstractmethod
    def decode(self, ids: Sequence[int]) -> str:
        """Text of `ids`; pad and eos are dropped."""

    def encode_bytes(self, data: bytes) -> np.ndarray:
        """Token ids (int32) of raw file or record bytes."""
        return np.asarray(self.encode(data.decode("utf-8", errors="replace")), np.int32)


class ByteVocab(Vocab):
    """Bytes offset by the three specials: byte b is token b + 3 (259 ids)."""

    @property
    def size(self) -> int:
        return BYTE_VOCAB_SIZE

    def encode(self, text: str) -> list[int]:
        return self.encode_bytes(text.encode("utf-8")).tolist()

    def encode_bytes(self, data: bytes) -> np.ndarray:
        return np.frombuffer(data, np.uint8).astype(np.int32) + NUM_SPECIAL

    def decode(self, ids: Sequence[int]) -> str:
        values = np.asarray(ids, np.int64)
        kept = values[values >= NUM_SPECIAL] - NUM_SPECIAL
        return kept.astype(np.uint8).tobytes().decode("utf-8", errors="replace")


class SentencePieceVocab(Vocab):
    """A SentencePiece model whose pad, eos and unk ids are 0, 1 and 2."""

    def __init__(self, model_proto: bytes, origin: str = "data.vocab_path"):
        self._processor = spm.SentencePieceProcessor(model_proto=model_proto)
        ids = (self._processor.pad_id(), self._processor.eos_id(), self._processor.unk_id())
        if ids != (PAD_ID, EOS_ID, UNK_ID):
            raise ConfigError(f"{origin}: SentencePiece model has pad/eos/unk ids {ids}; "
                              "allowed: (0, 1, 2) (train one with `tvq train-vocab`)")

    @property
    def size(self) -> int:
        return self._processor.get_piece_size()

    def encode(self, text: str) -> list[int]:
        return self._processor.encode(text)

    def decode(self, ids: Sequence[int]) -> str:
        return self._processor.decode([int(i) for i in ids if i not in (PAD_ID, EOS_ID)])


def load_vocab(config: Config) -> Vocab:
    """The vocabulary of config's dataset: SentencePiece from data.vocab_path for pg19 and text
    when it is set, else bytes."""
    path = config.data.vocab_path
    if config.data.dataset not in VOCAB_DATASETS or not path:
        return ByteVocab()
    file = epath.Path(path)
    if not file.is_file():
        raise ConfigError(f"data.vocab_path: no such file {path!r} "
                          "(train one with `tvq train-vocab`)")
    try:
        return SentencePieceVocab(file.read_bytes())
    except RuntimeError as error:
        raise ConfigError(f"data.vocab_path: {path!r} is not a SentencePiece model "
                          f"({str(error).splitlines()[0]})") from None
