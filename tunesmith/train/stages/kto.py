"""KTO on replies labelled desirable or undesirable.

The KL reference point z is estimated, as in the KTO paper, from each prompt paired with another example's
reply: each sample gets a fixed partner when training starts, so precomputed reference log-probs stay valid
whatever the batch order. An example's images are in its prompt: its row and its KL row carry them.
"""

from __future__ import annotations

import torch

from tunesmith.data.collator import pad_batch
from tunesmith.data.media_render import IMAGES, VIDEOS
from tunesmith.data.records import Encoded
from tunesmith.data.template import IGNORE
from tunesmith.dist.collectives import gather_rows
from tunesmith.train.losses import kto_kl_estimate, kto_losses
from tunesmith.train.stages.base import Stage
from tunesmith.train.stages.preference import (
    REF_LOGPS,
    build_reference,
    encode_replies,
    reference_logps,
    reply_logps,
    report_truncated,
)
from tunesmith.train.token_logps import LogpsModel

DESIRABLE = "desirable"
KL_SAMPLE = "kl_sample"  # meta: this prompt followed by the partner's reply (an Encoded)


class KtoStage(Stage):
    name = "kto"
    record_kind = "kto"
    takes_images = True

    def __init__(self, config=None):
        super().__init__(config)
        self.reference = None  # z is estimated over all processes' rows: see kl_estimate (self.accelerator)

    def encode(self, record, template, data):
        (sample,) = encode_replies(template, record.prompt, [record.completion], record.tools, data.max_length,
                                   record)
        sample.meta[DESIRABLE] = bool(record.desirable)
        return sample

    def collate(self, samples, pad_id):
        """B rows of the samples, then B rows of their prompts with their partners' replies."""
        rows = list(samples) + [sample.meta[KL_SAMPLE] for sample in samples]
        batch = self.with_media(pad_batch(rows, pad_id), rows)
        batch[DESIRABLE] = torch.tensor([sample.meta[DESIRABLE] for sample in samples])
        if all(REF_LOGPS in sample.meta for sample in samples):
            batch[REF_LOGPS] = torch.tensor([s.meta[REF_LOGPS][0] for s in samples] +
                                            [s.meta[REF_LOGPS][1] for s in samples], dtype=torch.float32)
        return batch

    def count_units(self, batch):
        return int(batch[DESIRABLE].shape[0])

    def prepare(self, model, data, config, device):
        report_truncated(self.name, data)
        for samples in (data.train, data.val):
            assign_kl_partners(samples, config.data.max_length)
        self.reference = build_reference(self, model, data, config, device)
        return LogpsModel(model)  # the loss inside the model's forward, where distributed wrappers see it

    def loss(self, model, batch):
        logps, mismatched_logps = reply_logps(model, batch)[0].chunk(2)
        ref_logps, ref_mismatched = reference_logps(self.reference, model, batch).chunk(2)
        kl = self.kl_estimate(mismatched_logps.detach(), ref_mismatched)
        desirable = batch[DESIRABLE]
        losses, rewards = kto_losses(logps, ref_logps, desirable, kl, self.config.beta,
                                     self.config.desirable_weight, self.config.undesirable_weight)
        metrics = {  # sums over the batch's examples; the loop divides by all examples of the window
            "rewards/desirable": (rewards * desirable).sum(),
            "rewards/undesirable": (rewards * ~desirable).sum(),
            "kl": kl * desirable.numel(),
        }
        return losses.sum(), metrics

    def kl_estimate(self, mismatched_logps: torch.Tensor, ref_mismatched: torch.Tensor) -> torch.Tensor:
        """z over the whole batch: with the batch split over processes, each one's rows alone would give each
        process its own z, and the run would train differently from one process with the same batch."""
        rows, _ = gather_rows(self.accelerator, {"policy": mismatched_logps, "reference": ref_mismatched})
        return kto_kl_estimate(rows["policy"], rows["reference"])


def assign_kl_partners(samples: list[Encoded], max_length: int) -> None:
    """Give sample i its prompt with the reply of sample i+1 (cyclically), the prompt cut from the left to fit.
    A prompt with images or videos is never cut (each needs all its tokens): the partner's reply is cut at its
    end instead."""
    for index, sample in enumerate(samples):
        partner = samples[(index + 1) % len(samples)]
        prompt = sample.input_ids[: _reply_start(sample)]
        reply = partner.input_ids[_reply_start(partner):]
        media = {key: list(sample.meta[key]) for key in (IMAGES, VIDEOS) if sample.meta.get(key)}
        if media:
            reply = reply[: max(0, max_length - len(prompt))]
        else:
            prompt = prompt[max(0, len(prompt) + len(reply) - max_length):]
        sample.meta[KL_SAMPLE] = Encoded(prompt + reply, [IGNORE] * len(prompt) + reply, media)


def _reply_start(sample: Encoded) -> int:
    return next(i for i, label in enumerate(sample.labels) if label != IGNORE)
