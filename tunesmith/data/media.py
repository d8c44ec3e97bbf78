"""Images and videos in the data: LLaMA-Factory's multimodal layout read as is.

A record lists its image files in an `images` column (paths relative to the dataset's folder) and marks where
each goes with an `<image>` placeholder in its messages; videos alike, with `videos` and `<video>`. Here the
columns are read, each file checked, and the placeholders counted against the files, so a bad record fails
while the data is read, named by file and record. What the placeholders become (the model's image and video
tokens) is decided later, in data/media_render.py.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from tunesmith.data.records import Conversation, KtoExample, Preference
from tunesmith.errors import TunesmithError

IMAGE_PLACEHOLDER = "<image>"
VIDEO_PLACEHOLDER = "<video>"
MEDIA_COLUMNS = ("images", "videos")
PLACEHOLDERS = {"images": IMAGE_PLACEHOLDER, "videos": VIDEO_PLACEHOLDER}


def attach_media(record, row: dict, spec, where: str):
    """The record with its image files (absolute paths), after checking files and placeholder counts.

    Placeholders only mean images in a dataset that maps an `images` column; elsewhere `<image>` is text.
    """
    found = {kind: _checked_files(record, row, spec, kind, where) for kind in MEDIA_COLUMNS}
    if not any(found.values()):
        return record
    return dataclasses.replace(record, **found, source=where)


def refuse_media_in_text(row: dict, spec, where: str) -> None:
    """Pre-training text has no place for images: a row that lists some is an error, not silently text."""
    if any(_listed(row, spec, kind, where) for kind in MEDIA_COLUMNS):
        raise TunesmithError(f"{where}: stage pt trains on plain text only and this record has images or videos; "
                             "use stage sft for image data, or a dataset without them")


def _checked_files(record, row: dict, spec, kind: str, where: str) -> list[str]:
    """The record's files of `kind` (absolute paths), each checked, as many as their placeholders."""
    if kind not in spec.columns:
        return []
    names = _listed(row, spec, kind, where)
    placeholder = PLACEHOLDERS[kind]
    placeholders = sum(text.count(placeholder) for text in contents(record))
    if placeholders != len(names):
        raise TunesmithError(f"{where}: {placeholders} '{placeholder}' placeholder(s) but {len(names)} file(s) in "
                             f"the {kind} column; put one placeholder where each {kind[:-1]} goes")
    if kind == "images":
        return [check_image(media_folder(spec) / name, where) for name in names]
    from tunesmith.data.video import check_video

    return [check_video(media_folder(spec) / name, where) for name in names]


def media_folder(spec) -> Path:
    """The folder image paths are relative to: the dataset's folder (the data file's, for a single file)."""
    return spec.path if spec.path.is_dir() else spec.path.parent


def contents(record) -> list[str]:
    """Every message text of a conversation-like record, the one place placeholders may stand."""
    if isinstance(record, Preference):
        messages = [*record.prompt, record.chosen, record.rejected]
    elif isinstance(record, KtoExample):
        messages = [*record.prompt, record.completion]
    elif isinstance(record, Conversation):
        messages = record.messages
    else:
        return []
    return [message.get("content") or "" for message in messages]


def check_image(path: Path, where: str) -> str:
    """The absolute path of an image file that exists and decodes; a clear error naming the record if not."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise TunesmithError(f"{where}: image file {path} does not exist; image paths are relative to the "
                             "dataset's folder")
    try:
        with Image.open(path) as image:
            image.verify()
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise TunesmithError(f"{where}: image file {path} is not a readable image ({err})") from None
    return str(path.resolve())


def load_image(path: str):
    """An image file as RGB pixels (the processors' input)."""
    from PIL import Image

    with Image.open(path) as image:
        return image.convert("RGB")


def _listed(row: dict, spec, kind: str, where: str) -> list[str]:
    """The file names in the row's `kind` column (images / videos), [] when the dataset has none."""
    value = row.get(spec.columns.get(kind, kind))
    if value in (None, "", []):
        return []
    value = [value] if isinstance(value, str) else value
    if not isinstance(value, list) or not all(isinstance(name, str) and name for name in value):
        raise TunesmithError(f"{where}: the {kind} column must be a list of file paths")
    return value


def check_model_reads(record, media) -> None:
    """A record's images and videos need a model that reads them (`media`: its image side, None for a
    text-only model)."""
    if getattr(record, "videos", None) and not getattr(media, "reads_videos", False):
        raise TunesmithError(f"{record.source}: the record has videos but the model does not read videos; use "
                             "Qwen2-VL or Qwen2.5-VL, or drop the 'videos' column from the dataset entry")
    if getattr(record, "images", None) and media is None:
        raise TunesmithError(f"{record.source}: the record has images but the model is text-only; use a "
                             "vision-language model (Qwen2-VL, Qwen2.5-VL, LLaVA) or a dataset without images")


def refuse_images(records: list, stage_name: str) -> list:
    """The records, when none has images: stage `stage_name` does not train on them (yet)."""
    for record in records:
        if getattr(record, "images", None) or getattr(record, "videos", None):
            raise TunesmithError(f"{record.source}: stage {stage_name} does not train on images or videos; use "
                                 "stage sft, dpo, kto or rm for such data, or a dataset without them")
    return records


def media_digest(spec) -> str | None:
    """A hash of the contents of every image and video a dataset lists (part of the data cache key: a file
    replaced under the same name changes its token count), None for a dataset without any."""
    import hashlib

    from tunesmith.data.files import data_files, file_digest, read_rows

    digest, found = hashlib.blake2b(digest_size=16), False
    folder = media_folder(spec)
    for path in data_files(spec.path):
        for row in read_rows(path):
            for kind in MEDIA_COLUMNS:
                names = row.get(spec.columns.get(kind, kind))
                for name in [names] if isinstance(names, str) else names if isinstance(names, list) else []:
                    file = folder / str(name)
                    digest.update(f"{name}\0{file_digest(file) if file.is_file() else 'missing'}\0".encode())
                    found = True
    return digest.hexdigest() if found else None
