"""tfds builders for enwik8, PG-19 and ImageNet64, written as array_record (no TensorFlow).

Source files are taken from the manual dir (`<data_dir>/downloads/manual/`) when they are there,
else downloaded (enwik8, ImageNet64) or read from GCS (PG-19).
"""

from __future__ import annotations

import io
import itertools
import os
import time
import zipfile
from typing import Any, Iterator

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from tvq.config import ConfigError

IMAGE_SHAPE = (64, 64, 3)


def _manual_file(dl_manager: Any, name: str) -> epath.Path | None:
    """`name` in the manual dir, or None when there is no manual dir or no such file."""
    try:
        path = epath.Path(dl_manager.manual_dir) / name
    except (AssertionError, ValueError):  # tfds raises these when the manual dir is absent
        return None
    return path if path.exists() else None


def _zip_members(archive: epath.Path | str) -> Iterator[tuple[str, bytes]]:
    """(name, content) of each file in a zip archive (tfds' own reader needs TensorFlow)."""
    with epath.Path(archive).open("rb") as handle, zipfile.ZipFile(handle) as members:
        for member in members.infolist():
            if not member.is_dir():
                yield os.path.normpath(member.filename), members.read(member)


class TvqEnwik8(tfds.core.GeneratorBasedBuilder):
    """enwik8 (first 10^8 bytes of an English Wikipedia dump) cut 90M/5M/5M like the original."""

    VERSION = tfds.core.Version("1.0.0")
    MANUAL_DOWNLOAD_INSTRUCTIONS = "Optional: put `enwik8` or `enwik8.zip` here."
    URL = "http://mattmahoney.net/dc/enwik8.zip"
    SPLIT_AT = (90_000_000, 95_000_000)  # train | validation | test
    CHUNK_BYTES = 1_000_000  # bytes per record; the split points are multiples of it

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self, description=self.__doc__, homepage="http://mattmahoney.net/dc/text.html",
            features=tfds.features.FeaturesDict(
                {"bytes": tfds.features.Tensor(shape=(None,), dtype=np.uint8)}),
            disable_shuffling=True)  # records in order: a split is their concatenation

    def _split_generators(self, dl_manager: Any) -> dict[str, Iterator]:
        raw = _manual_file(dl_manager, "enwik8")
        if raw is not None:
            data = raw.read_bytes()
        else:
            archive = _manual_file(dl_manager, "enwik8.zip") or dl_manager.download(self.URL)
            data = dict(_zip_members(archive))["enwik8"]
        bounds = (0, *self.SPLIT_AT, None)
        return {name: self._generate_examples(data[bounds[i]:bounds[i + 1]])
                for i, name in enumerate(("train", "validation", "test"))}

    def _generate_examples(self, data: bytes) -> Iterator:
        for index, offset in enumerate(range(0, len(data), self.CHUNK_BYTES)):
            chunk = np.frombuffer(data[offset:offset + self.CHUNK_BYTES], np.uint8)
            yield index, {"bytes": chunk}


class TvqPg19(tfds.core.GeneratorBasedBuilder):
    """PG-19: books from Project Gutenberg (before 1919), the official train/validation/test."""

    VERSION = tfds.core.Version("1.0.0")
    MANUAL_DOWNLOAD_INSTRUCTIONS = ("Optional: copy gs://deepmind-gutenberg here (folders train/, "
                                    "validation/, test/ of <book_id>.txt).")
    SOURCE = "gs://deepmind-gutenberg"

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self, description=self.__doc__, homepage="https://github.com/deepmind/pg19",
            features=tfds.features.FeaturesDict(
                {"book_text": tfds.features.Text(), "book_id": np.int32}))

    def _split_generators(self, dl_manager: Any) -> dict[str, Iterator]:
        root = _manual_file(dl_manager, "train")
        root = root.parent if root else epath.Path(self.SOURCE)
        return {name: self._generate_examples(root / name)
                for name in ("train", "validation", "test")}

    def _generate_examples(self, folder: epath.Path) -> Iterator:
        for file in sorted(folder.glob("*.txt")):
            book_id = int(file.stem)
            yield book_id, {"book_text": file.read_text(encoding="utf-8").strip(),
                            "book_id": book_id}


class TvqImagenet64(tfds.core.GeneratorBasedBuilder):
    """Downsampled ImageNet 64x64 (the npz release); the same record keys, hence the same
    example order, as tfds' imagenet_resized/64x64 that the original used."""

    VERSION = tfds.core.Version("1.0.0")
    MANUAL_DOWNLOAD_INSTRUCTIONS = ("Optional: put Imagenet64_train_part1_npz.zip, "
                                    "Imagenet64_train_part2_npz.zip and Imagenet64_val_npz.zip "
                                    "here (from https://image-net.org/download-images).")
    URL_PREFIX = "https://image-net.org/data/downsample/"
    ARCHIVES = {"train": ("Imagenet64_train_part1_npz.zip", "Imagenet64_train_part2_npz.zip"),
                "validation": ("Imagenet64_val_npz.zip",)}

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self, description=self.__doc__,
            homepage="https://patrykchrabaszcz.github.io/Imagenet32/",
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Tensor(shape=IMAGE_SHAPE, dtype=np.uint8,
                                              encoding=tfds.features.Encoding.ZLIB),
                "label": np.int32}))

    def _split_generators(self, dl_manager: Any) -> dict[str, Iterator]:
        def archive_path(name: str) -> Any:
            return _manual_file(dl_manager, name) or dl_manager.download(self.URL_PREFIX + name)

        return {split: self._generate_examples(itertools.chain.from_iterable(
                    _zip_members(archive_path(name)) for name in names))
                for split, names in self.ARCHIVES.items()}

    def _generate_examples(self, members: Iterator[tuple[str, bytes]]) -> Iterator:
        for name, content in members:
            if not content:
                continue
            arrays = np.load(io.BytesIO(content), allow_pickle=False)
            for index, (flat, label) in enumerate(zip(arrays["data"], arrays["labels"])):
                # stored as planar CHW; records are HWC
                image = np.reshape(flat, IMAGE_SHAPE[-1:] + IMAGE_SHAPE[:2]).transpose(1, 2, 0)
                yield name + str(index), {"image": image, "label": int(label) - 1}


BUILDERS: dict[str, type[tfds.core.GeneratorBasedBuilder]] = {
    "enwik8": TvqEnwik8, "pg19": TvqPg19, "imagenet64": TvqImagenet64}
PREPARE_POLL_S = 10.0


def prepared_builder(dataset: str, data_dir: str,
                     process_index: int = 0) -> tfds.core.GeneratorBasedBuilder:
    """The builder of `dataset` in data_dir, prepared by process 0 if needed (the others wait)."""
    if not data_dir.startswith("gs://") and not epath.Path(data_dir).is_dir():
        raise ConfigError(f"data.data_dir: no such directory {data_dir!r}")
    builder = BUILDERS[dataset](data_dir=data_dir, file_format="array_record")
    if builder.is_prepared():
        return builder
    if process_index == 0:
        try:
            builder.download_and_prepare()
        except Exception as error:  # any failure to fetch or read the sources
            first = (str(error).splitlines() or [type(error).__name__])[0]
            raise ConfigError(f"data.data_dir: could not prepare {builder.name} in "
                              f"{data_dir!r} ({first})") from error
        return builder
    print(f"waiting for process 0 to prepare {builder.name} in {data_dir}", flush=True)
    while not builder.is_prepared():
        time.sleep(PREPARE_POLL_S)
    return BUILDERS[dataset](data_dir=data_dir, file_format="array_record")
