"""Rendering a conversation for a vision-language model, with one rule for special-token text:

- an `<image>` placeholder of a record that lists images (its own `images` column) becomes that image's
  token ids (data/vision_processor.py), never trained (labels -100); a `<video>` of a record that lists
  videos alike;
- everything else is text as typed: an `<image>` in a record without images, and the model's own image
  tokens written out in a message (e.g. "<|image_pad|>"), are tokenized as plain characters, so no typed
  text can claim an image slot.

The chat template renders as for text; the placeholders travel through it as a private-use mark.
"""

from __future__ import annotations

import re

from tunesmith.data.media import IMAGE_PLACEHOLDER, VIDEO_PLACEHOLDER, check_model_reads
from tunesmith.data.records import Encoded
from tunesmith.data.template import IGNORE, span_labels
from tunesmith.errors import TunesmithError

IMAGE_MARK, VIDEO_MARK = "\ue002", "\ue003"  # private use: no tokenizer or dataset gives them meaning
IMAGES = "images"  # meta key: the sample's image files, in the order of their tokens
IMAGE_SPANS = "image_spans"  # meta key: [start, stop) of each image's tokens
VIDEOS, VIDEO_SPANS = "videos", "video_spans"  # the same for videos
KINDS = ((IMAGES, IMAGE_SPANS), (VIDEOS, VIDEO_SPANS))


def encode_with_media(template, conversation, train_on_prompt: bool = False, mask_history: bool = False) -> Encoded:
    """input_ids and labels of a conversation whose placeholders are expanded to the model's image tokens."""
    check_model_reads(conversation, template.media)
    files = {IMAGES: conversation.images, VIDEOS: conversation.videos}
    text, spans = template.render_with_spans(_marked(conversation.messages, **files), conversation.tools)
    ids, offsets, media_spans = tokenize_marked(template, text, **files)
    if train_on_prompt:
        labels = list(ids)
    else:
        labels = span_labels(ids, offsets, spans[-1:] if mask_history else spans)
    meta = {}
    for files_key, spans_key in KINDS:
        for start, stop in media_spans[files_key]:
            labels[start:stop] = [IGNORE] * (stop - start)
        if files[files_key]:
            meta[files_key], meta[spans_key] = list(files[files_key]), media_spans[files_key]
    return Encoded(ids, labels, meta)


def encode_reply_with_media(template, prompt: list[dict], reply: dict, tools, images: list[str],
                            videos: list[str] = ()) -> tuple[list[int], int]:
    """(ids of prompt + reply through the turn's closing, index of the reply's first token), the prompt's
    placeholders expanded to its images' and videos' tokens (the preference stages' reply encoding)."""
    from bisect import bisect_left

    text, (start, end) = template.render_reply(_marked(prompt, images, videos), reply, tools)
    ids, offsets, _ = tokenize_marked(template, text, images, videos)
    reply_start, reply_end = (bisect_left(offsets, edge, key=lambda offset: offset[0]) for edge in (start, end))
    return ids[:reply_end], reply_start


def _marked(messages: list[dict], images: list[str], videos: list[str] = ()) -> list[dict]:
    """The messages with each `<image>` placeholder as the image mark when the record has images, and each
    `<video>` as the video mark when it has videos (else as typed)."""
    swaps = [(IMAGE_PLACEHOLDER, IMAGE_MARK)] * bool(images) + [(VIDEO_PLACEHOLDER, VIDEO_MARK)] * bool(videos)
    if not swaps:
        return messages
    marked = []
    for message in messages:
        content = message.get("content")
        for placeholder, mark in swaps if content else ():
            content = content.replace(placeholder, mark)
        marked.append(dict(message, content=content) if content else message)
    return marked


def tokenize_marked(template, text: str, images: list[str], videos: list[str] = ()):
    """(ids, offsets, {IMAGES: image token spans, VIDEOS: video token spans}) of rendered text whose marks are
    expanded to the images' and videos' tokens."""
    media = template.media
    pieces = re.split(f"({IMAGE_MARK}|{VIDEO_MARK})", text)
    for mark, files, kind in ((IMAGE_MARK, images, "image"), (VIDEO_MARK, videos, "video")):
        if pieces.count(mark) != len(files):
            raise TunesmithError(f"the template wrote {pieces.count(mark)} {kind} marks for {len(files)} {kind}s; "
                                 "it must keep message contents as they are")
    queues = {IMAGE_MARK: (iter(images), media.image_ids),
              VIDEO_MARK: (iter(videos), getattr(media, "video_ids", None))}
    ids, offsets, spans, at = [], [], {IMAGES: [], VIDEOS: []}, 0
    for piece in pieces:
        if piece in queues:
            files, expand = queues[piece]
            expansion = expand(next(files))
            spans[IMAGES if piece == IMAGE_MARK else VIDEOS].append([len(ids), len(ids) + len(expansion)])
            ids += expansion
            offsets += [(at, at + 1)] * len(expansion)
        else:
            piece_ids, piece_offsets = _typed_text(template, piece, media)
            ids += piece_ids
            offsets += [(start + at, end + at) for start, end in piece_offsets]
        at += len(piece)
    return ids, offsets, spans


def _typed_text(template, text: str, media) -> tuple[list[int], list[tuple[int, int]]]:
    """Tokens of text in which the model's image tokens, written out, stay characters."""
    if media is None or not any(special in text for special in media.special_texts):
        return template.tokenize_with_offsets([text])[0] if text else ([], [])
    pattern = "|".join(re.escape(special) for special in media.special_texts)
    ids, offsets, at = [], [], 0
    for part in re.split(f"({pattern})", text):
        if part in media.special_texts:
            encoding = template.tokenizer(part, add_special_tokens=False, split_special_tokens=True,
                                          return_offsets_mapping=True)
            part_ids, part_offsets = encoding["input_ids"], encoding["offset_mapping"]
        elif part:
            part_ids, part_offsets = template.tokenize_with_offsets([part])[0]
        else:
            continue
        ids += part_ids
        offsets += [(start + at, end + at) for start, end in part_offsets]
        at += len(part)
    return ids, offsets


def truncate(sample: Encoded, max_length: int) -> Encoded:
    """The sample cut to max_length; an image or video whose tokens would be cut is dropped whole, with the
    text after it (the model needs all of its tokens or none)."""
    meta = dict(sample.meta)
    cut = min([max_length] + [start for _, spans in KINDS for start, stop in meta.get(spans, [])
                              if stop > max_length])
    for files, spans in KINDS:
        if spans in meta:
            kept = [span for span in meta[spans] if span[1] <= cut]
            meta[files], meta[spans] = meta[files][: len(kept)], kept
            if not kept:
                meta.pop(files), meta.pop(spans)
    return Encoded(sample.input_ids[:cut], sample.labels[:cut], meta)


def prompt_ids_with_media(template, messages: list[dict], images: list[str]) -> list[int]:
    """Ids of a conversation plus the assistant's header, for generation, its `<image>` placeholders (one per
    image, in order) expanded to the images' tokens."""
    if template.media is None:
        raise TunesmithError("this model is text-only and cannot read images; use a vision-language model "
                             "(Qwen2-VL, Qwen2.5-VL, LLaVA)")
    text = template.render(_marked(messages, images), add_generation_prompt=True)
    return tokenize_marked(template, text, images)[0]
