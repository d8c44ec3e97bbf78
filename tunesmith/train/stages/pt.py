"""Continued pre-training: plain text, loss on every token, closed by the end-of-sequence token."""

from tunesmith.data.records import Encoded
from tunesmith.train.stages.base import TokenStage


class PtStage(TokenStage):
    name = "pt"
    record_kind = "text"

    def encode(self, record, template, data):
        tokenizer = template.tokenizer
        ids = tokenizer(record.text, add_special_tokens=False)["input_ids"]
        if tokenizer.bos_token_id is not None and getattr(tokenizer, "add_bos_token", False):
            ids = [tokenizer.bos_token_id] + ids
        ids = ids + [tokenizer.eos_token_id]
        return Encoded(ids, list(ids))
