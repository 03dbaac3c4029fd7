"""Data: vocabularies, the tfds builders, local text, the synthetic task and the grain pipelines.

    vocab = load_vocab(config)
    it = make_train_iterator(config, process_index, process_count)   # next(it): int32 [L, T]
    it.get_state() / it.set_state(state)                              # saved in checkpoints
    it_eval = make_eval_iterator(config, "validation", process_index, process_count)
    path = train_vocab(config)
"""

from tvq.data.pipeline import local_batch_size, make_eval_iterator, make_train_iterator
from tvq.data.vocab import ByteVocab, SentencePieceVocab, Vocab, load_vocab
from tvq.data.vocab_training import train_vocab

__all__ = ["ByteVocab", "SentencePieceVocab", "Vocab", "load_vocab", "local_batch_size",
           "make_eval_iterator", "make_train_iterator", "train_vocab"]
