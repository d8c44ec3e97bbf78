"""QLoRA's starting point, checked against bitsandbytes itself rather than a stored number.

Before the first update a QLoRA model is its quantized base (LoRA's B matrices start at zero), so its loss
must equal a plain float32 forward whose decoder linear weights went through bitsandbytes' own NF4
quantize / dequantize round trip, with the output head left unquantized as transformers leaves it.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("bitsandbytes")

TEXT = "The quick brown fox jumps over the lazy dog, and then it naps in the sun for a while."


def nf4_round_trip(model) -> None:
    import bitsandbytes.functional as bnb

    with torch.no_grad():
        for module in model.model.layers.modules():
            if isinstance(module, torch.nn.Linear):
                packed, state = bnb.quantize_4bit(module.weight.data, quant_type="nf4", blocksize=64,
                                                  compress_statistics=True)
                module.weight.data = bnb.dequantize_4bit(packed, state).to(torch.float32)


def test_qlora_loss_before_training_is_the_bitsandbytes_round_trip_loss(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunesmith.config.method_kinds import parse_method
    from tunesmith.data.collator import pad_batch
    from tunesmith.data.records import Encoded
    from tunesmith.config.schema import ModelConfig
    from tunesmith.model.load import load_model
    from tunesmith.model.methods import apply_method
    from tunesmith.train.stages import get_stage

    token_ids = AutoTokenizer.from_pretrained(tiny_model_dir)(TEXT)["input_ids"]
    batch = pad_batch([Encoded(token_ids, list(token_ids))], pad_id=0)  # one row: no padding, every token trained
    ids = batch["input_ids"]

    config = ModelConfig(path=str(tiny_model_dir), dtype="float32", quantization_bit=4, quantization_type="nf4",
                         double_quantization=True)
    qlora = apply_method(load_model(config, "cpu"), parse_method(dict(kind="qlora")))
    stage = get_stage("pt")
    with torch.no_grad():
        summed, _ = stage.loss(qlora, batch)
    ours = float(summed) / stage.count_units(batch)

    reference = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    nf4_round_trip(reference)
    unquantized = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    with torch.no_grad():  # transformers' own loss: the mean over the shifted target tokens
        expected = float(reference(input_ids=ids, labels=ids).loss)
        unquantized_loss = float(unquantized(input_ids=ids, labels=ids).loss)
    assert ours == pytest.approx(expected, rel=1e-5)
    assert ours != pytest.approx(unquantized_loss, rel=1e-6)  # the check would be empty if NF4 changed nothing
