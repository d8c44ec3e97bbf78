"""SentencePiece-style vocabularies (BPE over "▁"-joined words with byte fallback: Llama 2, Mistral v0.x,
Gemma, Phi-3) as llama.cpp's `llama` tokenizer reads them.

llama.cpp merges the adjacent pair whose joined text is the vocabulary entry with the highest score, so
each token's score is minus the rank of the first merge that makes it: the same order in which the
Hugging Face tokenizer applies its merges. Byte tokens (<0x41>) are typed BYTE, the one it falls back to.
"""

from __future__ import annotations

import re

BYTE_TOKEN = re.compile(r"<0x[0-9A-F]{2}>")


def add_spm_vocab(writer, spec: dict, tokens: list[str], types: list[int]) -> None:
    from gguf import TokenType

    model = spec["model"]
    ranks = _merge_ranks(model["merges"])
    types = list(types)
    for index, token in enumerate(tokens):
        if BYTE_TOKEN.fullmatch(token) and model["vocab"].get(token) == index:
            types[index] = int(TokenType.BYTE)
        elif token == model.get("unk_token"):
            types[index] = int(TokenType.UNKNOWN)
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_scores([-float(ranks[token]) if token in ranks else 0.0 for token in tokens])
    writer.add_token_types(types)
    writer.add_add_space_prefix(adds_space_prefix(spec))


def _merge_ranks(merges: list) -> dict[str, int]:
    ranks: dict[str, int] = {}
    for rank, merge in enumerate(merges):
        left, right = merge.split(" ", 1) if isinstance(merge, str) else merge
        ranks.setdefault(left + right, rank)
    return ranks


def adds_space_prefix(spec: dict) -> bool:
    """Whether the tokenizer puts "▁" before the text: a Prepend normalizer (Llama 2's legacy mode) or a
    Metaspace pre-tokenizer that prepends."""
    return any(_prepends(node) for node in (spec.get("normalizer"), spec.get("pre_tokenizer")))


def _prepends(node: dict | None) -> bool:
    if not node:
        return False
    children = node.get("normalizers") or node.get("pretokenizers")
    if children:
        return any(_prepends(child) for child in children)
    if node["type"] == "Prepend":
        return node["prepend"] == "▁"
    if node["type"] == "Metaspace":
        return node.get("prepend_scheme", "always") != "never" and node.get("add_prefix_space", True)
    return False
