"""Dataset preview: the first samples as the stage encodes them, split into trained and untrained text.

The marks come from the labels the training run would use (the stage's own encoder, the model's template,
max_length truncation), so what is highlighted is exactly what the loss is taken on.
"""

from __future__ import annotations

from tunesmith.config.schema import RunConfig
from tunesmith.data.template import IGNORE

TRAINED = "trained"
SEPARATOR = "\n\n" + "─" * 40 + "\n\n"


def preview_samples(config: RunConfig, count: int = 3) -> list[tuple[str, str | None]]:
    """(text, TRAINED or None) segments of the first `count` samples, samples separated by a rule."""
    from tunesmith.data.dataset import load_records
    from tunesmith.data.template import ChatTemplate
    from tunesmith.model.load import load_tokenizer, resolve_source
    from tunesmith.train.stages import get_stage

    stage = get_stage(config.stage.kind)
    data = config.data.model_copy(update={"max_samples": count})
    records = load_records(data, stage.record_kind)[:count]
    tokenizer = load_tokenizer(config.model, resolve_source(config.model))
    template = ChatTemplate(tokenizer, config.model.template)
    segments: list[tuple[str, str | None]] = []
    for index, record in enumerate(records):
        if index:
            segments.append((SEPARATOR, None))
        sample = stage.encode(record, template, config.data)
        ids, labels = sample.input_ids[: config.data.max_length], sample.labels[: config.data.max_length]
        segments += marked_segments(tokenizer, ids, labels)
    return segments


def marked_segments(tokenizer, ids: list[int], labels: list[int]) -> list[tuple[str, str | None]]:
    """Runs of consecutive tokens with the same trained / untrained state, decoded to text."""
    segments: list[tuple[str, str | None]] = []
    start = 0
    for position in range(1, len(ids) + 1):
        boundary = position == len(ids) or (labels[position] != IGNORE) != (labels[start] != IGNORE)
        if boundary:
            text = tokenizer.decode(ids[start:position], skip_special_tokens=False)
            segments.append((text, TRAINED if labels[start] != IGNORE else None))
            start = position
    return segments
