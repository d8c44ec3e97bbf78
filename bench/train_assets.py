"""The shared inputs of the training benchmark: a 32k tokenizer, a tiny random Llama, 2,000 alpaca samples.

Both tunesmith and LLaMA-Factory read exactly these files. The tokenizer is a byte-level BPE trained on the
LLaMA-Factory demo data (no tokenizer of 32k entries ships with the assets); its ChatML-style chat template is
what tunesmith renders with and what LLaMA-Factory parses into its own template (no `template:` key).
"""

from __future__ import annotations

import json
from pathlib import Path

LF_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "assets" / "data" / "llamafactory"
VOCAB = 32_000
SAMPLES = 2_000
DATASET = "bench_alpaca"
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def alpaca_rows() -> list[dict]:
    rows = []
    for name in ("alpaca_en_demo.json", "alpaca_zh_demo.json"):
        rows += json.loads((LF_DATA / name).read_text(encoding="utf-8"))
    return (rows * 2)[:SAMPLES]  # the two demo files hold 1,999; the first sample comes round again


def build_data(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{DATASET}.json").write_text(json.dumps(alpaca_rows(), ensure_ascii=False), encoding="utf-8")
    (folder / "dataset_info.json").write_text(json.dumps({DATASET: {"file_name": f"{DATASET}.json"}}))
    return folder


def build_tokenizer(folder: Path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    texts = [" ".join((row["instruction"], row["input"], row["output"])) for row in alpaca_rows()]
    texts += (LF_DATA / "wiki_demo.txt").read_text(encoding="utf-8").splitlines()
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(texts, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(folder)
    return tokenizer


def build_model(folder: Path) -> Path:
    """hidden 256, 4 layers, 4 heads / 2 KV heads, intermediate 688, vocab 32k, fp32, untied output head."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_tokenizer(folder)
    config = LlamaConfig(
        vocab_size=VOCAB, hidden_size=256, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=688, max_position_embeddings=2048, tie_word_embeddings=False,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=None,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).to(torch.float32).save_pretrained(folder, safe_serialization=True)
    return folder


def build_assets(work: Path) -> tuple[Path, Path]:
    """(model folder, dataset folder), built once under `work`."""
    model, data = work / "model", work / "data"
    if not (model / "config.json").is_file():
        build_model(model)
    if not (data / "dataset_info.json").is_file():
        build_data(data)
    return model, data
