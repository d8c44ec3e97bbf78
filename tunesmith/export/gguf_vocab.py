"""The tokenizer as GGUF metadata: vocabulary, token types, merges, special ids and the chat template.

Two kinds of vocabulary are written: byte-level BPE (`tokenizer.ggml.model: gpt2`: Llama 3, Qwen, SmolLM,
Mistral's Tekken) here, and SentencePiece-style BPE with byte fallback (`llama`: Llama 2, Mistral v0.x,
Gemma, Phi-3) in gguf_vocab_spm. Any other is refused by name before the export starts.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import yaml

from tunesmith.errors import TunesmithError

TABLES = Path(__file__).with_name("gguf_tables.yaml")


@cache
def gguf_tables() -> dict:
    return yaml.safe_load(TABLES.read_text(encoding="utf-8"))


def tokenizer_spec(tokenizer) -> dict:
    return json.loads(tokenizer.backend_tokenizer.to_str())


def vocab_kind(spec: dict) -> str:
    """"gpt2" (byte-level BPE) or "llama" (BPE with byte fallback), or a clear error for any other."""
    model = spec["model"]
    if model["type"] == "BPE" and _is_byte_level(spec):
        return "gpt2"
    if model["type"] == "BPE" and model.get("byte_fallback"):
        return "llama"
    raise TunesmithError(
        f"GGUF export does not support this {model['type']} tokenizer (supported: byte-level BPE as in Llama 3 "
        "and Qwen, BPE with byte fallback as in Llama 2, Mistral and Gemma); export without export.gguf"
    )


def check_vocab(tokenizer, vocab_size: int) -> dict:
    """Fail before any work on a vocabulary the writer cannot express or that does not fit the model; the
    tokenizer's spec (its parsed tokenizer.json, seconds for a 150k vocabulary) for `add_vocab`."""
    spec = tokenizer_spec(tokenizer)
    if vocab_kind(spec) == "gpt2":
        pretokenizer_name(spec)
    if len(tokenizer.get_vocab()) > vocab_size:
        raise TunesmithError(
            f"the tokenizer has {len(tokenizer.get_vocab())} tokens but the model only {vocab_size} embedding "
            "rows; the run's tokenizer does not belong to this model"
        )
    return spec


def add_vocab(writer, tokenizer, spec: dict, vocab_size: int, template_source: str, stop_ids: list[int]) -> None:
    """Write the tokenizer of the merged model (`spec`: what `check_vocab` returned); rows past the tokenizer's
    length become unused padding."""
    from tunesmith.export.gguf_vocab_spm import add_spm_vocab

    tokens, types = tokens_and_types(tokenizer, vocab_size)
    if vocab_kind(spec) == "llama":
        add_spm_vocab(writer, spec, tokens, types)
    else:
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(pretokenizer_name(spec))
        writer.add_token_list(tokens)
        writer.add_token_types(types)
        writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]])
        writer.add_add_space_prefix(False)
    for kind in ("bos", "eos", "unk", "pad"):
        token_id = getattr(tokenizer, f"{kind}_token_id")
        if token_id is not None:
            getattr(writer, f"add_{kind}_token_id")(token_id)
    end_of_turn = [i for i in stop_ids if i != tokenizer.eos_token_id]
    if end_of_turn:
        writer.add_eot_token_id(end_of_turn[0])
    probe = tokenizer("a")["input_ids"]
    writer.add_add_bos_token(tokenizer.bos_token_id is not None and probe[:1] == [tokenizer.bos_token_id])
    writer.add_add_eos_token(tokenizer.eos_token_id is not None and probe[-1:] == [tokenizer.eos_token_id])
    writer.add_chat_template(template_source)


def tokens_and_types(tokenizer, vocab_size: int) -> tuple[list[str], list[int]]:
    from gguf import TokenType

    by_id = {index: token for token, index in tokenizer.get_vocab().items()}
    added = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for index in range(vocab_size):
        if index not in by_id:
            tokens.append(f"[PAD{index}]")
            types.append(int(TokenType.UNUSED))
        elif index in added:
            tokens.append(added[index].content)
            types.append(int(TokenType.CONTROL if added[index].special else TokenType.USER_DEFINED))
        else:
            tokens.append(by_id[index])
            types.append(int(TokenType.NORMAL))
    return tokens, types


def pretokenizer_name(spec: dict) -> str:
    """llama.cpp's name for how the tokenizer splits text before merging (its `tokenizer.ggml.pre`)."""
    steps = _pretokenizer_steps(spec.get("pre_tokenizer"))
    for name, known in gguf_tables()["pretokenizers"].items():
        if known == steps:
            return name
    raise TunesmithError(
        f"GGUF export does not know this tokenizer's pre-tokenizer {steps}; add it to "
        "tunesmith/export/gguf_tables.yaml (pretokenizers) with llama.cpp's name for it"
    )


def _pretokenizer_steps(node: dict | None) -> list[str]:
    if node is None:
        return []
    if node["type"] == "Sequence":
        return [step for child in node["pretokenizers"] for step in _pretokenizer_steps(child)]
    if node["type"] == "Split":
        return [f"split {node['pattern'].get('Regex', node['pattern'].get('String'))}"]
    if node["type"] == "Digits":
        return ["digits individual" if node.get("individual_digits") else "digits"]
    if node["type"] == "ByteLevel":
        return ["bytelevel regex" if node.get("use_regex", True) else "bytelevel"]
    return [node["type"].lower()]


def _is_byte_level(spec: dict) -> bool:
    return "bytelevel" in " ".join(_pretokenizer_steps(spec.get("pre_tokenizer")))
