"""`train-vocab`: a SentencePiece BPE model trained on a bounded sample of the training split."""

from __future__ import annotations

import os
import tempfile

import sentencepiece as spm
from etils import epath

from tvq.config import Config, ConfigError
from tvq.data.sources import train_texts
from tvq.data.vocab import EOS_ID, PAD_ID, UNK_ID


def _write_sample(config: Config, path: str) -> int:
    """Write training documents, one per line, up to data.vocab_sample_bytes; bytes written."""
    written = 0
    with open(path, "wb") as sample:
        for doc in train_texts(config):
            if written >= config.data.vocab_sample_bytes:
                break
            piece = doc[:config.data.vocab_sample_bytes - written]
            sample.write(piece + b"\n")
            written += len(piece)
    return written


def train_vocab(config: Config) -> str:
    """Train a SentencePiece model of model.vocab_size pieces (pad 0, eos 1, unk 2) and write
    it to data.vocab_path (atomically; an existing file is replaced only on success)."""
    target = config.data.vocab_path
    if not target:
        raise ConfigError("data.vocab_path: required for train-vocab (where to write the model)")
    with tempfile.TemporaryDirectory(prefix="tvq-vocab-") as work:
        sample = os.path.join(work, "sample.txt")
        if _write_sample(config, sample) == 0:
            raise ConfigError(f"data.data_dir: the train split of {config.data.dataset} in "
                              f"{config.data.data_dir!r} is empty")
        try:
            spm.SentencePieceTrainer.train(
                input=sample, model_prefix=os.path.join(work, "spm"), model_type="bpe",
                vocab_size=config.model.vocab_size, character_coverage=1.0, pad_id=PAD_ID,
                eos_id=EOS_ID, unk_id=UNK_ID, bos_id=-1, minloglevel=2)
        except RuntimeError as error:
            raise ConfigError(f"model.vocab_size: got {config.model.vocab_size}; SentencePiece: "
                              f"{str(error).splitlines()[0]}") from None
        out = epath.Path(target)
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = epath.Path(f"{target}.partial")
        partial.write_bytes(epath.Path(work, "spm.model").read_bytes())
        partial.rename(out)
    return target
