"""Supervised fine-tuning: conversations rendered by the chat template, loss on assistant turns."""

from tunesmith.train.stages.base import TokenStage


class SftStage(TokenStage):
    name = "sft"
    record_kind = "conversation"
    takes_images = True

    def encode_many(self, records, template, data):
        return template.encode_many(records, train_on_prompt=data.train_on_prompt, mask_history=data.mask_history)
