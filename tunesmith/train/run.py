"""`tunesmith train`: from a config to a run folder, top to bottom."""

from __future__ import annotations

import shutil
from functools import partial
from pathlib import Path

from tunesmith.config import RunConfig, dump_config
from tunesmith.errors import TunesmithError

CONFIG_FILE = "config.yaml"


def train(config: RunConfig) -> Path:
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    from tunesmith.data.dataset import prepare_data
    from tunesmith.data.template import ChatTemplate
    from tunesmith.model.load import load_model, load_tokenizer, resolve_source
    from tunesmith.model.methods import apply_method, count_parameters
    from tunesmith.model.save import save_trained
    from tunesmith.train.batches import BatchStream
    from tunesmith.train.loop import Trainer
    from tunesmith.train.plot import plot_loss
    from tunesmith.train.stages import get_stage

    accelerator = Accelerator(mixed_precision=_mixed_precision(config.train.precision))
    run_dir = prepare_run_dir(config) if accelerator.is_main_process else Path(config.train.output_dir)
    set_seed(config.train.seed)
    stage = get_stage(config.stage.kind)
    source = resolve_source(config.model)
    tokenizer = load_tokenizer(config.model, source)
    template = ChatTemplate(tokenizer, config.model.template)
    data = prepare_data(config.data, lambda record: stage.encode(record, template, config.data),
                        stage.record_kind, config.train.seed)
    accelerator.print(data.summary())
    model = apply_method(load_model(config.model, accelerator.device.type, source), config.method)
    accelerator.print(count_parameters(model))
    collate = partial(stage.collate, pad_id=tokenizer.pad_token_id)
    stream = BatchStream(data.train, config.train.batch_size, collate, config.train.seed,
                         accelerator.process_index, accelerator.num_processes)
    trainer = Trainer(accelerator, model, stage, config.train, stream, data.val, run_dir)
    trainer.run()
    if accelerator.is_main_process:
        save_trained(accelerator.unwrap_model(trainer.model), tokenizer, template.source, run_dir)
        plot_loss(run_dir)
        accelerator.print(f"run saved in {run_dir}")
    return run_dir


def prepare_run_dir(config: RunConfig) -> Path:
    run_dir = Path(config.train.output_dir)
    if run_dir.exists() and any(run_dir.iterdir()):
        if not config.train.overwrite:
            raise TunesmithError(
                f"output folder {run_dir} already holds files; set train.overwrite=true to replace them "
                "or choose another train.output_dir"
            )
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / CONFIG_FILE).write_text(dump_config(config), encoding="utf-8")
    return run_dir


def _mixed_precision(precision: str) -> str:
    import torch

    if precision == "auto":
        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    return {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[precision]
