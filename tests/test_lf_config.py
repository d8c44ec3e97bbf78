"""LLaMA-Factory training YAMLs: translated to our config, every key not applied named, never dropped."""

from __future__ import annotations

import pytest
import yaml

from tunesmith.cli import main
from tunesmith.config import load_config
from tunesmith.config.llamafactory import translate

# LLaMA-Factory's examples/train_lora/llama3_lora_sft.yaml, with a DeepSpeed file and two stray keys added
LF_LORA_SFT = {
    "model_name_or_path": "meta-llama/Meta-Llama-3-8B-Instruct", "trust_remote_code": True,
    "stage": "sft", "do_train": True, "finetuning_type": "lora", "lora_rank": 8, "lora_target": "all",
    "dataset": "identity,alpaca_en_demo", "template": "llama3", "cutoff_len": 2048, "max_samples": 1000,
    "overwrite_cache": True, "preprocessing_num_workers": 16, "dataloader_num_workers": 4,
    "output_dir": "saves/llama3-8b/lora/sft", "logging_steps": 10, "save_steps": 500, "plot_loss": True,
    "overwrite_output_dir": True, "save_only_model": False, "report_to": "none",
    "per_device_train_batch_size": 1, "gradient_accumulation_steps": 8, "learning_rate": 1.0e-4,
    "num_train_epochs": 3.0, "lr_scheduler_type": "cosine", "warmup_ratio": 0.1, "bf16": True,
    "ddp_timeout": 180000000, "resume_from_checkpoint": None, "val_size": 0.1,
    "deepspeed": "examples/deepspeed/ds_z3_config.json",
    "lora_rnak": 4, "enable_liger_kernel": True,
}


def write(tmp_path, raw: dict, name: str = "lf.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw))
    return path


def test_a_llamafactory_yaml_loads_as_the_same_run(tmp_path):
    messages = []
    config = load_config(write(tmp_path, LF_LORA_SFT), notify=messages.append)

    assert config.model.path == "meta-llama/Meta-Llama-3-8B-Instruct" and config.model.trust_remote_code
    assert config.model.template == "llama3" and config.model.dtype == "bfloat16"
    assert config.method.kind == "lora"
    assert (config.method.rank, config.method.alpha, config.method.targets) == (8, 16, "all-linear")
    assert config.stage.kind == "sft"
    assert config.data.datasets == ["identity", "alpaca_en_demo"]
    assert (config.data.max_length, config.data.max_samples, config.data.val_size) == (2048, 1000, 0.1)
    train = config.train
    assert (train.batch_size, train.grad_accum, train.lr, train.epochs) == (1, 8, 1e-4, 3.0)
    assert (train.scheduler, train.warmup_ratio, train.precision) == ("cosine", 0.1, "bf16")
    assert (train.logging_steps, train.save_steps, train.overwrite) == (10, 500, True)
    assert train.gradient_checkpointing  # LLaMA-Factory's default
    assert config.dist.engine == "deepspeed"
    assert config.dist.deepspeed.config_file == "examples/deepspeed/ds_z3_config.json"
    assert config.dist.timeout_minutes == 3_000_000

    printed = messages[0]
    assert "as a tunesmith config it reads" in printed
    assert "not applied: lora_rnak (did you mean 'lora_rank'?)" in printed
    assert "not applied: enable_liger_kernel" in printed
    assert "no effect in tunesmith: do_train" in printed


def test_the_printed_yaml_is_a_native_config_of_the_same_run(tmp_path):
    messages = []
    translated = load_config(write(tmp_path, LF_LORA_SFT), notify=messages.append)
    native_text = messages[0].split("reads:\n", 1)[1].split("\n  not applied", 1)[0]

    native = load_config(write(tmp_path, yaml.safe_load(native_text), "native.yaml"))

    assert native == translated


def test_every_key_is_translated_or_named():
    translation = translate(LF_LORA_SFT)

    given = {key for key, value in LF_LORA_SFT.items() if value is not None}
    groups = [set(translation.applied), set(translation.unsupported), set(translation.no_effect)]
    assert given <= set.union(*groups)
    assert not (groups[0] & groups[1]) and not (groups[0] & groups[2]) and not (groups[1] & groups[2])


def test_llamafactory_defaults_are_kept_where_ours_differ():
    config = translate({"model_name_or_path": "m", "dataset": "identity"}).config

    assert config["data"]["max_length"] == 2048  # cutoff_len
    assert config["train"]["batch_size"] == 8 and config["train"]["lr"] == 5e-5
    assert config["train"]["scheduler"] == "linear" and config["train"]["precision"] == "fp32"
    assert config["model"]["dtype"] == "float32" and config["train"]["gradient_checkpointing"] is True
    assert config["method"]["alpha"] == 16  # 2 x the default rank 8


@pytest.mark.parametrize("extra, expected", [
    ({"quantization_bit": 4, "quantization_type": "fp4"}, {"kind": "qlora"}),
    ({"finetuning_type": "freeze", "freeze_trainable_layers": 3, "freeze_extra_modules": "embed_tokens"},
     {"kind": "freeze", "layers": 3, "modules": ["embed_tokens"]}),
    ({"lora_target": "q_proj,v_proj", "lora_rank": 16, "use_dora": True, "additional_target": "embed_tokens"},
     {"kind": "lora", "targets": ["q_proj", "v_proj"], "rank": 16, "alpha": 32, "dora": True,
      "modules_to_save": ["embed_tokens"]}),
])
def test_methods_translate(extra, expected):
    method = translate({"model_name_or_path": "m", "dataset": "d", **extra}).config["method"]

    assert method["kind"] == expected["kind"]
    for group in ("lora", "freeze"):
        for key, value in expected.get(group, {}).items():
            assert method[group][key] == value


def test_unsupported_values_are_named():
    translation = translate({"model_name_or_path": "m", "dataset": "d", "finetuning_type": "oft",
                             "freeze_trainable_layers": -2, "optim": "sgd", "quantization_method": "gptq"})

    assert set(translation.unsupported) >= {"finetuning_type", "freeze_trainable_layers", "optim",
                                            "quantization_method"}


def test_convert_config_writes_a_native_yaml(tmp_path, capsys):
    out = tmp_path / "native.yaml"

    assert main(["convert-config", str(write(tmp_path, LF_LORA_SFT)), "-o", str(out)]) == 0

    text = out.read_text()
    assert text.startswith("# translated from the LLaMA-Factory config")
    assert "# not applied: lora_rnak" in text
    assert load_config(out) == load_config(write(tmp_path, LF_LORA_SFT), notify=lambda message: None)
    assert "not applied: enable_liger_kernel" in capsys.readouterr().err


def test_convert_config_refuses_a_native_yaml(tmp_path, capsys):
    native = write(tmp_path, {"model": {"path": "m"}, "data": {"datasets": ["d"]}})

    assert main(["convert-config", str(native)]) == 2
    assert "not a LLaMA-Factory training YAML" in capsys.readouterr().err


def test_keys_of_another_kind_have_no_effect_and_are_said_so():
    from tunesmith.config import validate_config

    translation = translate({"model_name_or_path": "m", "dataset": "identity", "stage": "sft",
                             "finetuning_type": "full", "lora_rank": 8, "pref_loss": "ipo"})

    assert "rank" not in translation.config["method"] and "preference_loss" not in translation.config["stage"]
    assert "lora_rank" in translation.no_effect and "method.kind lora, qlora" in translation.no_effect["lora_rank"]
    assert "pref_loss" in translation.no_effect and "lora_target" not in translation.no_effect
    validate_config(translation.config)
