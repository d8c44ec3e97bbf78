"""Builds a stage, its samples and its trainer on the tiny model, the way tunesmith.train.run does,
from records made in the test (so stage tests do not depend on dataset files)."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from conftest import tiny_run_config


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


def build(model_dir: Path, tmp_path: Path, records: list, stage: dict, method: str = "lora", **train):
    """(stage, trainer, data, config, template) ready to train the records for `train` settings;
    method qlora quantizes the base to 4 bits (bitsandbytes)."""
    from accelerate import Accelerator

    from tunesmith.config.load import validate_config
    from tunesmith.data.dataset import PreparedData
    from tunesmith.data.template import ChatTemplate
    from tunesmith.model.load import load_model, load_tokenizer
    from tunesmith.model.methods import apply_method
    from tunesmith.train.batches import BatchStream
    from tunesmith.train.loop import Trainer
    from tunesmith.train.stages import get_stage

    raw = tiny_run_config(model_dir, tmp_path, tmp_path / "run", stage=stage, method={"kind": method},
                          train={"max_steps": 2, "batch_size": 4, **train})
    if method == "qlora":
        raw["model"].update(quantization_bit=4, dtype="float32")
    config = validate_config(raw)
    stage_obj = get_stage(config.stage.kind, config.stage)
    tokenizer = load_tokenizer(config.model)
    template = ChatTemplate(tokenizer, config.model.template)
    samples = [stage_obj.encode(record, template, config.data) for record in records]
    data = PreparedData([sample for sample in samples if sample.num_targets], [])
    stage_obj.check(config, data)
    accelerator = Accelerator(cpu=True)
    model = apply_method(load_model(config.model), config.method)
    model = stage_obj.prepare(model, data, config, accelerator.device)
    stream = BatchStream(data.train, stage_obj.stream_batch_size(config.train.batch_size),
                         partial(stage_obj.collate, pad_id=tokenizer.pad_token_id), config.train.seed)
    (tmp_path / "run").mkdir(exist_ok=True)
    trainer = Trainer(accelerator, model, stage_obj, config.train, stream, [], tmp_path / "run")
    return stage_obj, trainer, data, config, template
