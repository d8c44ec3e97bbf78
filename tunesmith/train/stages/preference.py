"""What the preference stages (rm, dpo, kto, ppo's scorer) share: replies encoded after a prompt, pairs
batched as one forward pass, and per-sequence log-probs.

A reply is rendered with its prompt by the chat template (the one rendering mechanism); its tokens are found
from the template's own assistant span. A prompt too long for max_length loses tokens from its left end,
never the reply's; a reply that does not fit on its own leaves a sample with no target tokens, which the data
layer drops and counts.
"""

from __future__ import annotations

from bisect import bisect_left

import torch

from tunesmith.data.collator import TARGET_INDEX, pad_batch
from tunesmith.data.media import check_model_reads
from tunesmith.data.media_render import IMAGES, VIDEOS, encode_reply_with_media
from tunesmith.data.records import Encoded
from tunesmith.data.template import IGNORE
from tunesmith.train.stages.base import Stage
from tunesmith.train.token_logps import token_logps

REJECTED = "rejected"  # meta key of a pair's rejected reply (an Encoded)
PROMPT_TRUNCATED = "prompt_truncated"  # meta flag: the prompt lost tokens from its left end
REF_LOGPS = "ref_logps"  # meta key of precomputed reference log-probs


def encode_reply(template, prompt: list[dict], reply: dict, tools: list | None = None) -> tuple[list[int], int]:
    """(ids of prompt + reply through the turn's closing, index of the reply's first token)."""
    text, (start, end) = template.render_reply(prompt, reply, tools)
    ((ids, offsets),) = template.tokenize_with_offsets([text])
    # The first tokens that begin at or after the reply's start and end (token starts are sorted).
    reply_start, reply_end = (bisect_left(offsets, edge, key=lambda offset: offset[0]) for edge in (start, end))
    return list(ids[:reply_end]), reply_start


def fit(ids: list[int], reply_start: int, max_length: int, keep_prompt: int) -> tuple[Encoded, bool]:
    """The sample cut to max_length from the prompt's left end (keeping `keep_prompt` tokens of it at most).

    Returns (sample, prompt was truncated); a sample whose reply alone does not fit has no targets.
    """
    cut = reply_start - keep_prompt
    ids = ids[cut:]
    reply_start -= cut
    if len(ids) > max_length or reply_start == 0:
        return Encoded(ids[:max_length], [IGNORE] * min(len(ids), max_length)), cut > 0
    labels = [IGNORE] * reply_start + ids[reply_start:]
    return Encoded(ids, labels), cut > 0


def encode_replies(template, prompt, replies: list[dict], tools, max_length: int, record=None) -> list[Encoded]:
    """Each reply after the same prompt, the prompt cut from the left by the same amount so all fit.

    For a vision-language model the prompt's images and videos are expanded (data/media_render.py) and a prompt
    with them is never cut: a pair that does not fit is dropped, as one whose reply does not fit.
    """
    images, videos = getattr(record, "images", []), getattr(record, "videos", [])
    if record is not None:
        check_model_reads(record, template.media)
    if template.media is not None:
        encoded = [encode_reply_with_media(template, prompt, reply, tools, images, videos) for reply in replies]
    else:
        encoded = [encode_reply(template, prompt, reply, tools) for reply in replies]
    longest_reply = max(len(ids) - start for ids, start in encoded)
    keep = min(start for _, start in encoded)
    keep = max(0, min(keep, max_length - longest_reply)) if not (images or videos) else keep
    samples = []
    for ids, start in encoded:
        sample, truncated = fit(ids, start, max_length, min(start, keep))
        sample.meta[PROMPT_TRUNCATED] = truncated
        if images:
            sample.meta[IMAGES] = list(images)
        if videos:
            sample.meta[VIDEOS] = list(videos)
        samples.append(sample)
    return samples


def encode_pair(template, record, max_length: int) -> Encoded:
    """The chosen reply as the sample, the rejected one in its meta (both fit max_length)."""
    chosen, rejected = encode_replies(template, record.prompt, [record.chosen, record.rejected], record.tools,
                                      max_length, record)
    if rejected.num_targets == 0:
        chosen = Encoded(chosen.input_ids, [IGNORE] * len(chosen.input_ids))  # dropped as a pair
    chosen.meta[REJECTED] = rejected
    return chosen


def collate_pairs(samples: list[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """One batch of 2B rows: the B chosen replies, then the B rejected ones."""
    rows = list(samples) + [sample.meta[REJECTED] for sample in samples]
    batch = pad_batch(rows, pad_id)
    if all(REF_LOGPS in sample.meta for sample in samples):
        batch[REF_LOGPS] = torch.tensor([s.meta[REF_LOGPS][0] for s in samples] +
                                        [s.meta[REF_LOGPS][1] for s in samples], dtype=torch.float32)
    return batch


def reply_logps(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """([rows] summed log-probs of the labelled tokens, [rows] how many there are), logits only where needed."""
    labels = batch["labels"]
    logps = token_logps(model, batch)
    rows = torch.div(batch[TARGET_INDEX], labels.shape[1], rounding_mode="floor")
    # Summed in float64: a reply's sum reaches hundreds, where float32 keeps ~1e-5, and rewards are beta times
    # the difference of two such sums (policy minus reference), near zero early in training.
    sums = torch.zeros(labels.shape[0], dtype=torch.float64, device=logps.device).index_add(0, rows, logps.double())
    return sums.float(), (labels[:, 1:] != IGNORE).sum(-1)


def reference_logps(reference, model, batch) -> torch.Tensor:
    """The batch's precomputed reference log-probs, or computed now with the reference weights."""
    if REF_LOGPS in batch:
        return batch[REF_LOGPS]
    with torch.no_grad(), reference.model(model) as network:
        return reply_logps(network, batch)[0]


def precompute_reference(reference, model, samples: list[Encoded], collate, batch_size: int, device) -> None:
    """Store each sample's reference log-probs (one per row of its collated form) in its meta."""
    for start in range(0, len(samples), batch_size):
        chunk = samples[start : start + batch_size]
        batch = {key: value.to(device) for key, value in collate(chunk).items()}
        logps = reference_logps(reference, model, batch).view(-1, len(chunk)).T.tolist()
        for sample, values in zip(chunk, logps):
            sample.meta[REF_LOGPS] = values


def count_truncated(samples: list[Encoded]) -> int:
    return sum(1 for sample in samples if sample.meta.get(PROMPT_TRUNCATED))


class PairStage(Stage):
    """Stages trained on (chosen, rejected) pairs: each sample is one pair, collated chosen rows first."""

    record_kind = "preference"

    def encode(self, record, template, data):
        return encode_pair(template, record, data.max_length)

    def collate(self, samples, pad_id):
        return self.with_media(collate_pairs(samples, pad_id), list(samples) + [s.meta[REJECTED] for s in samples])

    def count_units(self, batch):
        return batch["input_ids"].shape[0] // 2

    def report_truncated(self, data) -> None:
        report_truncated(self.name, data)


def report_truncated(stage_name: str, data) -> None:
    truncated = count_truncated(data.train + data.val)
    if truncated:
        print(f"{stage_name}: {truncated} prompts truncated from the left to fit data.max_length")


def build_reference(stage, model, data, config, device):
    """The frozen reference for `model`; with stage.precompute_ref, its log-probs stored on every sample."""
    from tunesmith.dist.accelerator import mixed_precision
    from tunesmith.dist.deepspeed import deepspeed_config
    from tunesmith.model.reference import Reference

    settings = None  # used only when ZeRO-3 has partitioned the model at load, to partition the reference alike
    if config.dist.engine == "deepspeed":
        settings = deepspeed_config(config.dist.deepspeed, config.train, mixed_precision(config.train.precision))
    reference = Reference(model, settings).to(device)
    if stage.config.precompute_ref:
        model.to(device)
        for samples in (data.train, data.val):  # padding is masked out, so its id does not matter
            precompute_reference(reference, model, samples, lambda chunk: stage.collate(chunk, 0),
                                 config.train.batch_size, device)
    return reference
