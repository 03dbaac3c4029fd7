"""Packing documents into fixed-length sequences, as a checkpointable grain IterDataset.

Documents are concatenated in order and cut every `length` tokens; a sequence may span several
documents and a document several sequences. At the end of a finite stream the last partial
sequence is padded. The state is the parent's state before the current document plus the
offset into it, so restoring resumes at exactly the next token.
"""

from __future__ import annotations

from typing import Any

import grain
import numpy as np


class PackIterDataset(grain.IterDataset):
    """Concatenate the parent's 1-D token arrays and cut them into int32 [length] rows."""

    def __init__(self, parent: grain.IterDataset, length: int, pad_id: int):
        super().__init__(parent)
        self._length = length
        self._pad_id = pad_id

    def __iter__(self) -> grain.DatasetIterator:
        return _PackIterator(self._parent.__iter__(), self._length, self._pad_id)


class _PackIterator(grain.DatasetIterator):
    def __init__(self, parent: grain.DatasetIterator, length: int, pad_id: int):
        super().__init__(parent)
        self._length = length
        self._pad_id = pad_id
        self._doc_state = parent.get_state()  # parent state before the current document
        self._doc = np.zeros((0,), np.int32)
        self._offset = 0

    def _next_doc(self) -> bool:
        """Move to the parent's next document; False when the parent is exhausted."""
        state = self._parent.get_state()
        try:
            doc = next(self._parent)
        except StopIteration:
            return False
        self._doc_state, self._doc, self._offset = state, np.asarray(doc, np.int32), 0
        return True

    def __next__(self) -> np.ndarray:
        pieces, need = [], self._length
        while need:
            if self._offset == len(self._doc) and not self._next_doc():
                if not pieces:
                    raise StopIteration
                pieces.append(np.full((need,), self._pad_id, np.int32))
                break
            piece = self._doc[self._offset:self._offset + need]
            self._offset += len(piece)
            need -= len(piece)
            pieces.append(piece)
        return np.concatenate(pieces)

    def get_state(self) -> dict[str, Any]:
        return {"parent": self._doc_state, "offset": self._offset}

    def set_state(self, state: dict[str, Any]) -> None:
        self._parent.set_state(state["parent"])
        self._doc_state = state["parent"]
        self._doc, self._offset = np.zeros((0,), np.int32), 0
        if state["offset"] and self._next_doc():
            self._offset = state["offset"]
