"""Continued pre-training: plain text, loss on every token, closed by the end-of-sequence token."""

from tunesmith.data.records import Encoded
from tunesmith.train.stages.base import TokenStage


class PtStage(TokenStage):
    name = "pt"
    record_kind = "text"

    def encode_many(self, records, template, data):
        tokenizer = template.tokenizer
        adds_bos = tokenizer.bos_token_id is not None and getattr(tokenizer, "add_bos_token", False)
        bos = [tokenizer.bos_token_id] if adds_bos else []
        samples = []
        for ids in tokenizer([record.text for record in records], add_special_tokens=False)["input_ids"]:
            ids = bos + ids + [tokenizer.eos_token_id]
            samples.append(Encoded(ids, list(ids)))
        return samples
