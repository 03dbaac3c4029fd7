"""Local text data: under data.data_dir, `train`, `validation` and `test`, each either one file
(any extension, e.g. `train.txt`) or a directory of files (each file one document)."""

from __future__ import annotations

from typing import Iterator

from etils import epath

from tvq.config import ConfigError


def split_path(data_dir: str, split: str) -> epath.Path:
    """The file or directory holding `split`; ConfigError naming data.data_dir when missing."""
    root = epath.Path(data_dir)
    if not root.is_dir():
        raise ConfigError(f"data.data_dir: no such directory {data_dir!r}")
    matches = sorted(path for path in root.iterdir()
                     if path.name == split or path.name.startswith(f"{split}."))
    if not matches:
        raise ConfigError(f"data.data_dir: no {split!r} in {data_dir!r}; allowed: a file "
                          f"{split} or {split}.<ext>, or a directory {split}/ of files")
    if len(matches) > 1:
        names = ", ".join(path.name for path in matches)
        raise ConfigError(f"data.data_dir: several candidates for {split!r} in {data_dir!r} "
                          f"({names}); allowed: exactly one")
    return matches[0]


def document_files(path: epath.Path) -> list[epath.Path]:
    """The files directly in a split directory, sorted by name, hidden files skipped."""
    files = sorted(file for file in path.iterdir()
                   if file.is_file() and not file.name.startswith("."))
    if not files:
        raise ConfigError(f"data.data_dir: directory {str(path)!r} holds no files")
    return files


def split_files(data_dir: str, split: str) -> tuple[list[epath.Path], bool]:
    """The split's files, and whether they are separate documents (a directory: eos after
    each) rather than one continuous text (a single file: no eos)."""
    path = split_path(data_dir, split)
    if path.is_dir():
        return document_files(path), True
    return [path], False


def iter_texts(data_dir: str, split: str) -> Iterator[bytes]:
    """The split's documents as bytes, one at a time."""
    for file in split_files(data_dir, split)[0]:
        yield file.read_bytes()
