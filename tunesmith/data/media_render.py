"""Rendering a conversation for a vision-language model, with one rule for special-token text:

- an `<image>` placeholder of a record that lists images (its own `images` column) becomes that image's
  token ids (data/vision_processor.py), never trained (labels -100);
- everything else is text as typed: an `<image>` in a record without images, and the model's own image
  tokens written out in a message (e.g. "<|image_pad|>"), are tokenized as plain characters, so no typed
  text can claim an image slot.

The chat template renders as for text; the placeholders travel through it as a private-use mark.
"""

from __future__ import annotations

import re

from tunesmith.data.media import IMAGE_PLACEHOLDER, check_model_reads
from tunesmith.data.records import Encoded
from tunesmith.data.template import IGNORE, span_labels
from tunesmith.errors import TunesmithError

IMAGE_MARK = "\ue002"  # private use: no tokenizer or dataset gives it meaning
IMAGES = "images"  # meta key: the sample's image files, in the order of their tokens
IMAGE_SPANS = "image_spans"  # meta key: [start, stop) of each image's tokens


def encode_with_media(template, conversation, train_on_prompt: bool = False, mask_history: bool = False) -> Encoded:
    """input_ids and labels of a conversation whose placeholders are expanded to the model's image tokens."""
    check_model_reads(conversation, template.media)
    images = conversation.images
    text, spans = template.render_with_spans(_marked(conversation.messages, images), conversation.tools)
    ids, offsets, image_spans = tokenize_marked(template, text, images)
    if train_on_prompt:
        labels = list(ids)
    else:
        labels = span_labels(ids, offsets, spans[-1:] if mask_history else spans)
    for start, stop in image_spans:
        labels[start:stop] = [IGNORE] * (stop - start)
    return Encoded(ids, labels, {IMAGES: list(images), IMAGE_SPANS: image_spans} if images else {})


def encode_reply_with_media(template, prompt: list[dict], reply: dict, tools, images: list[str]
                            ) -> tuple[list[int], int]:
    """(ids of prompt + reply through the turn's closing, index of the reply's first token), the prompt's
    placeholders expanded to its images' tokens (the preference stages' reply encoding, with images)."""
    from bisect import bisect_left

    text, (start, end) = template.render_reply(_marked(prompt, images), reply, tools)
    ids, offsets, _ = tokenize_marked(template, text, images)
    reply_start, reply_end = (bisect_left(offsets, edge, key=lambda offset: offset[0]) for edge in (start, end))
    return ids[:reply_end], reply_start


def _marked(messages: list[dict], images: list[str]) -> list[dict]:
    """The messages with each `<image>` placeholder as the mark, when the record has images (else as typed)."""
    if not images:
        return messages
    return [dict(m, content=m["content"].replace(IMAGE_PLACEHOLDER, IMAGE_MARK)) if m.get("content") else m
            for m in messages]


def tokenize_marked(template, text: str, images: list[str]):
    """(ids, offsets, image token spans) of rendered text whose marks are expanded to the images' tokens."""
    media = template.media
    pieces = text.split(IMAGE_MARK)
    if len(pieces) - 1 != len(images):
        raise TunesmithError(f"the template wrote {len(pieces) - 1} image marks for {len(images)} images; it "
                             "must keep message contents as they are")
    ids, offsets, image_spans, at = [], [], [], 0
    for index, piece in enumerate(pieces):
        piece_ids, piece_offsets = _typed_text(template, piece, media)
        ids += piece_ids
        offsets += [(start + at, end + at) for start, end in piece_offsets]
        at += len(piece)
        if index < len(images):
            expansion = media.image_ids(images[index])
            image_spans.append([len(ids), len(ids) + len(expansion)])
            ids += expansion
            offsets += [(at, at + 1)] * len(expansion)
            at += 1
    return ids, offsets, image_spans


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
    """The sample cut to max_length; an image whose tokens would be cut is dropped whole, with the text after
    it (the model needs all of an image's tokens or none)."""
    spans = sample.meta.get(IMAGE_SPANS, [])
    kept = [span for span in spans if span[1] <= max_length]
    cut = max_length if len(kept) == len(spans) else spans[len(kept)][0]
    meta = dict(sample.meta)
    if spans:
        meta[IMAGES], meta[IMAGE_SPANS] = meta[IMAGES][: len(kept)], kept
        if not kept:
            meta.pop(IMAGES), meta.pop(IMAGE_SPANS)
    return Encoded(sample.input_ids[:cut], sample.labels[:cut], meta)


def prompt_ids_with_media(template, messages: list[dict], images: list[str]) -> list[int]:
    """Ids of a conversation plus the assistant's header, for generation, its `<image>` placeholders (one per
    image, in order) expanded to the images' tokens."""
    if template.media is None:
        raise TunesmithError("this model is text-only and cannot read images; use a vision-language model "
                             "(Qwen2-VL, Qwen2.5-VL, LLaVA)")
    text = template.render(_marked(messages, images), add_generation_prompt=True)
    return tokenize_marked(template, text, images)[0]
