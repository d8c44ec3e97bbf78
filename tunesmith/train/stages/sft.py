"""Supervised fine-tuning: conversations rendered by the chat template, loss on assistant turns."""

from tunesmith.train.stages.base import TokenStage


class SftStage(TokenStage):
    name = "sft"
    record_kind = "conversation"

    def encode(self, record, template, data):
        return template.encode(record, train_on_prompt=data.train_on_prompt, mask_history=data.mask_history)
