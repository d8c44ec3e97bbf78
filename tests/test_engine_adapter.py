"""An unquantized adapter is merged into the weights for inference, with the same outputs as unmerged."""

from __future__ import annotations

import torch


def test_adapter_is_merged_for_inference_and_scores_as_the_unmerged_model(tiny_model_dir, tmp_path):
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    from tunesmith.infer.loader import load_engine

    torch.manual_seed(0)
    peft_model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                                LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "adapter")

    engine = load_engine(str(tiny_model_dir), adapter=str(tmp_path / "adapter"))

    assert not isinstance(engine.model, PeftModel)
    unmerged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), tmp_path / "adapter")
    ids = torch.tensor([[1, 5, 9, 14, 3]])
    with torch.no_grad():
        expected = unmerged(input_ids=ids).logits
        got = engine.model(input_ids=ids).logits
        with unmerged.disable_adapter():
            base = unmerged(input_ids=ids).logits
    assert torch.allclose(got, expected, atol=1e-4)
    assert not torch.allclose(expected, base, atol=1e-3)  # the adapter does change the outputs
