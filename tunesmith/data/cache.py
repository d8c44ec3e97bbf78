"""On-disk cache of tokenized samples, so a second run with the same inputs skips tokenization.

One folder per key (a hash of the data files' contents, the dataset entries, the encoder — template, tokenizer,
stage — and the data options that change tokens). Inside, each shard of records is written atomically as
it finishes (so a crash keeps the finished shards and a rerun resumes), and `manifest.json` is written last:
its presence means the folder is complete. Files are numpy archives read with allow_pickle=False.

A shard is checked as it is read: an archive that does not open (truncated, corrupted: zip checks each
member's CRC), arrays that disagree in length, or token ids outside the tokenizer's vocabulary raise
CorruptShard, and the caller rebuilds that shard.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import zipfile
from itertools import chain
from pathlib import Path

from tunesmith.data.records import Encoded
from tunesmith.errors import TunesmithError

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
# Options that change which records exist or how they become tokens; the rest (split, packing,
# processes, cache location) act after the cache and must not invalidate it.
_KEYED_DATA_OPTIONS = ("max_length", "vars", "max_samples", "train_on_prompt", "mask_history")
ENCODING_CODE = ("data", "train/stages")  # folders of the package whose source decides the tokens


def cache_key(data, specs, record_kind: str, fingerprint: str) -> str:
    from tunesmith.data.files import data_files, file_digest
    from tunesmith.data.media import media_digest

    datasets = [
        {"name": spec.name, "formatting": spec.formatting, "ranking": spec.ranking, "columns": spec.columns,
         "tags": spec.tags, "num_samples": spec.num_samples,
         "files": [[path.name, file_digest(path)] for path in data_files(spec.path)], "media": media_digest(spec)}
        for spec in specs
    ]
    options = {name: getattr(data, name) for name in _KEYED_DATA_OPTIONS}
    parts = {"version": FORMAT_VERSION, "code": encoding_code_version(), "encoder": fingerprint, "kind": record_kind,
             "datasets": datasets, "options": options}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


@functools.cache
def encoding_code_version() -> str:
    """A digest of the source of tunesmith's code that turns records into tokens (the data package, its
    templates, the stages' encoders), so that a change in how records are encoded never reads an old cache."""
    package = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for folder in ENCODING_CODE:
        for path in sorted((package / folder).rglob("*")):
            if path.is_file() and path.suffix in (".py", ".jinja", ".json", ".yaml"):
                digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def encoder_fingerprint(template, stage_name: str) -> str:
    """Identity of what turns records into tokens: the stage, the template source and the whole tokenizer."""
    tokenizer = template.tokenizer
    backend = getattr(tokenizer, "backend_tokenizer", None)
    vocabulary = backend.to_str() if backend is not None else json.dumps(tokenizer.get_vocab(), sort_keys=True)
    digest = hashlib.sha256()
    media = [template.media.fingerprint()] if getattr(template, "media", None) is not None else []
    for part in (stage_name, template.source, type(tokenizer).__name__, vocabulary, *media,
                 json.dumps([tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id,
                             getattr(tokenizer, "add_bos_token", None)])):
        digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()


class CorruptShard(TunesmithError):
    """A cached shard that cannot be trusted; it is rebuilt from the data."""


class ShardCache:
    """The shards of one cache key: write each as it finishes, read them back, mark the whole complete."""

    def __init__(self, folder: Path, vocab_size: int | None = None):
        self.folder = folder
        self.vocab_size = vocab_size  # token ids must be below it (None: not checked)

    def shard_path(self, index: int) -> Path:
        return self.folder / f"shard-{index:05d}.npz"

    def has(self, index: int) -> bool:
        return self.shard_path(index).is_file()

    def manifest(self) -> dict | None:
        path = self.folder / MANIFEST
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None

    def write(self, index: int, samples: list[Encoded], stats: dict) -> None:
        import numpy as np

        lengths = np.array([len(sample.input_ids) for sample in samples], dtype=np.int64)
        total = int(lengths.sum())
        ids = np.fromiter(chain.from_iterable(sample.input_ids for sample in samples), dtype=np.int32, count=total)
        labels = np.fromiter(chain.from_iterable(sample.labels for sample in samples), dtype=np.int32, count=total)
        try:
            extras = json.dumps({"stats": stats, "meta": [_dump_meta(sample.meta) for sample in samples]})
        except TypeError as err:
            raise TunesmithError(f"tokenized samples cannot be cached ({err}); set data.cache: false") from None
        buffer = io.BytesIO()
        np.savez(buffer, ids=ids, labels=labels, lengths=lengths, extras=np.frombuffer(extras.encode(), np.uint8))
        _write_atomic(self.shard_path(index), buffer.getvalue())

    def read(self, index: int) -> tuple[list[Encoded], dict]:
        ids, labels, lengths, extras = self._checked_arrays(index)
        ids, labels = ids.tolist(), labels.tolist()
        samples, start = [], 0
        for length, meta in zip(lengths.tolist(), extras["meta"]):
            samples.append(Encoded(ids[start : start + length], labels[start : start + length], _load_meta(meta)))
            start += length
        return samples, extras["stats"]

    def _checked_arrays(self, index: int):
        import numpy as np

        path = self.shard_path(index)
        try:
            with np.load(path, allow_pickle=False) as archive:
                ids, labels, lengths = archive["ids"], archive["labels"], archive["lengths"]
                extras = json.loads(archive["extras"].tobytes().decode())
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, UnicodeDecodeError) as err:
            raise CorruptShard(f"cached shard {path} is unreadable ({type(err).__name__}: {err})") from None
        if len(ids) != len(labels) or int(lengths.sum()) != len(ids) or len(extras.get("meta", ())) != len(lengths):
            raise CorruptShard(f"cached shard {path} is inconsistent (its arrays disagree in length)")
        if len(ids) and (int(ids.min()) < 0 or (self.vocab_size and int(ids.max()) >= self.vocab_size)):
            raise CorruptShard(f"cached shard {path} holds token ids outside the vocabulary of {self.vocab_size}")
        return ids, labels, lengths, extras

    def forget(self, index: int) -> None:
        """Drop a shard (and the completion mark, which no longer holds) so it is encoded again."""
        for path in (self.folder / MANIFEST, self.shard_path(index)):
            path.unlink(missing_ok=True)

    def finish(self, num_shards: int, stats: dict) -> None:
        _write_atomic(self.folder / MANIFEST, json.dumps({"shards": num_shards, "stats": stats}).encode())


def _write_atomic(path: Path, payload: bytes) -> None:
    """Write to a temporary name, then rename: a crash never leaves a half-written file under the real name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_bytes(payload)
    os.replace(temporary, path)


_ENCODED = "__encoded__"


def _dump_meta(meta: dict) -> dict:
    """Stage metadata as JSON; nested samples (e.g. a pair's rejected reply) are tagged so they come back."""
    return {key: {_ENCODED: [value.input_ids, value.labels, _dump_meta(value.meta)]} if isinstance(value, Encoded)
            else value for key, value in meta.items()}


def _load_meta(meta: dict) -> dict:
    return {key: Encoded(value[_ENCODED][0], value[_ENCODED][1], _load_meta(value[_ENCODED][2]))
            if isinstance(value, dict) and _ENCODED in value else value for key, value in meta.items()}
