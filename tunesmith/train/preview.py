"""`tunesmith data preview`: samples exactly as training encodes them, trained tokens marked, and statistics.

Only the tokenizer is loaded (a folder holding just tokenizer files is enough), never the weights.
"""

from __future__ import annotations

import json
from pathlib import Path

from tunesmith.data.media_render import IMAGE_SPANS, IMAGES, VIDEO_SPANS, VIDEOS
from tunesmith.data.template import IGNORE

COLOR_ON, COLOR_OFF = "\x1b[1;32m", "\x1b[0m"  # bold green: trained tokens
MARK_ON, MARK_OFF = "[[", "]]"  # plain-text markers when the output is not a terminal


def prepare_for_preview(config):
    """(tokenizer, PreparedData of the whole dataset as the config's stage encodes it, unpacked, unsplit)."""
    from tunesmith.data.cache import encoder_fingerprint
    from tunesmith.data.dataset import prepare_data
    from tunesmith.data.template import ChatTemplate
    from tunesmith.train.stages import get_stage

    from tunesmith.data.video import VideoSampling
    from tunesmith.data.vision_processor import load_media

    stage = get_stage(config.stage.kind)
    tokenizer = _load_tokenizer(config.model)
    # a vision-language model's image side, from its folder: images are shown where their tokens go
    media = load_media(Path(config.model.path).expanduser(), tokenizer, VideoSampling.of(config.data))
    template = ChatTemplate(tokenizer, config.model.template, media)
    data = config.data.model_copy(update={"val_size": 0.0, "packing": False})
    prepared = prepare_data(data, lambda records: stage.encode_many(records, template, data), stage.record_kind, 0,
                            fingerprint=encoder_fingerprint(template, stage.name))
    return template.tokenizer, prepared


def _load_tokenizer(model):
    """The tokenizer alone: a local folder is read directly (tokenizer files suffice, no config.json)."""
    from tunesmith.model.load import load_tokenizer, resolve_source, tokenizer_from

    folder = Path(model.path).expanduser()
    if not (folder.is_dir() and not model.gguf_file):
        return load_tokenizer(model, resolve_source(model))
    return tokenizer_from(folder, model.trust_remote_code)


def statistics(prepared) -> dict:
    lengths = sorted(len(sample.input_ids) for sample in prepared.train)

    def percentile(q: float) -> int:
        return lengths[min(len(lengths) - 1, int(q * len(lengths)))]

    return {"samples": len(lengths), "tokens": sum(lengths),
            "trained_tokens": sum(sample.num_targets for sample in prepared.train),
            "length_p50": percentile(0.5), "length_p90": percentile(0.9), "length_p99": percentile(0.99),
            "length_max": lengths[-1], "truncated": prepared.truncated, "dropped": prepared.dropped}


def render_sample(tokenizer, ids: list[int], labels: list[int], color: bool) -> str:
    """The decoded sample with runs of trained tokens wrapped in color codes or [[ ]] markers."""
    on, off = (COLOR_ON, COLOR_OFF) if color else (MARK_ON, MARK_OFF)
    parts, start = [], 0
    for position in range(1, len(ids) + 1):
        if position == len(ids) or (labels[position] != IGNORE) != (labels[start] != IGNORE):
            text = tokenizer.decode(ids[start:position], skip_special_tokens=False)
            parts.append(on + text + off if labels[start] != IGNORE else text)
            start = position
    return "".join(parts)


def render_with_images(tokenizer, sample, color: bool) -> str:
    """`render_sample`, each image's (and video's) tokens shown as one marker: which one, and how many tokens
    it takes."""
    parts, start = [], 0
    marked = []
    for kind, files, spans in (("image", IMAGES, IMAGE_SPANS), ("video", VIDEOS, VIDEO_SPANS)):
        marked += [(span, kind, number, path) for number, (path, span) in
                   enumerate(zip(sample.meta.get(files, []), sample.meta.get(spans, [])), 1)]
    for (first, stop), kind, number, path in sorted(marked):
        parts.append(render_sample(tokenizer, sample.input_ids[start:first], sample.labels[start:first], color))
        parts.append(f"<{kind} {number}: {Path(path).name}, {stop - first} tokens>")
        start = stop
    parts.append(render_sample(tokenizer, sample.input_ids[start:], sample.labels[start:], color))
    return "".join(parts)


def preview_lines(tokenizer, prepared, count: int, as_json: bool, color: bool):
    """The lines `tunesmith data preview` prints."""
    samples = prepared.train[:count]
    if as_json:
        for sample in samples:
            yield json.dumps({"input_ids": sample.input_ids, "labels": sample.labels})
        return
    for index, sample in enumerate(samples):
        yield f"── sample {index + 1}: {len(sample.input_ids)} tokens, {sample.num_targets} trained ──"
        yield render_with_images(tokenizer, sample, color)
    stats = statistics(prepared)
    yield "── statistics ──"
    yield (f"samples {stats['samples']}, tokens {stats['tokens']:,} ({stats['trained_tokens']:,} trained); length "
           f"p50 {stats['length_p50']}, p90 {stats['length_p90']}, p99 {stats['length_p99']}, max "
           f"{stats['length_max']}; {stats['truncated']} truncated, {stats['dropped']} dropped (no target tokens)")
