"""`tunesmith train`: from a config to a run folder, top to bottom."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from tunesmith.config import RunConfig, dump_config
from tunesmith.errors import TunesmithError
from tunesmith.run_folder import CONFIG_FILE


@dataclass
class Run:
    """A run built and ready for its first step (or its resumed one)."""

    config: RunConfig
    accelerator: Any
    trainer: Any  # train/loop.py's Trainer
    tokenizer: Any
    template: Any  # data/template.py's ChatTemplate
    run_dir: Path


def train(config: RunConfig) -> Path:
    return run_to_the_end(build_run(config))


def build_run(config: RunConfig) -> Run:
    """Everything before the first step: accelerator, run folder, data, model, stage, trainer, resume point."""
    from accelerate.utils import set_seed

    from tunesmith.data.cache import encoder_fingerprint
    from tunesmith.data.dataset import prepare_data
    from tunesmith.data.media import refuse_images
    from tunesmith.data.template import ChatTemplate
    from tunesmith.data.video import VideoSampling
    from tunesmith.data.vision_processor import load_media
    from tunesmith.dist.accelerator import make_accelerator
    from tunesmith.model.load import load_tokenizer, resolve_source
    from tunesmith.train.batches import BatchStream
    from tunesmith.train.checkpoint import find_resume_checkpoint
    from tunesmith.train.loop import Trainer
    from tunesmith.train.model_setup import prepare_model
    from tunesmith.train.sinks import build_sinks
    from tunesmith.train.stages import get_stage

    accelerator = make_accelerator(config)
    resume_from = find_resume_checkpoint(Path(config.train.output_dir), config.train.resume)
    if accelerator.is_main_process:
        run_dir = prepare_run_dir(config, keep_existing=resume_from is not None)
    else:
        run_dir = Path(config.train.output_dir)
    accelerator.wait_for_everyone()
    set_seed(config.train.seed)
    stage = get_stage(config.stage.kind, config.stage)
    source = resolve_source(config.model)
    tokenizer = load_tokenizer(config.model, source)
    media = stage.media = load_media(source.location, tokenizer, VideoSampling.of(config.data))
    template = ChatTemplate(tokenizer, config.model.template, media)
    takes = (lambda records: records) if stage.takes_images else partial(refuse_images, stage_name=stage.name)
    with accelerator.main_process_first():  # rank 0 tokenizes; the others then read its cache
        data = prepare_data(config.data, lambda records: stage.encode_many(takes(records), template, config.data),
                            stage.record_kind, config.train.seed,
                            fingerprint=encoder_fingerprint(template, stage.name), vocab_size=len(tokenizer))
    accelerator.print(data.summary())
    stage.check(config, data)  # before the model loads: a bad reward function or setting fails in seconds
    model = prepare_model(config, accelerator, source)
    model = stage.prepare(model, data, config, accelerator.device)  # value head, reference model
    collate = partial(stage.collate, pad_id=tokenizer.pad_token_id)
    on_gpu = accelerator.device.type == "cuda"
    stream = BatchStream(data.train, stage.stream_batch_size(config.train.batch_size), collate, config.train.seed,
                         accelerator.process_index, accelerator.num_processes, prefetch=on_gpu, pin=on_gpu)
    sinks = build_sinks(config.train.report_to, run_dir, config.model_dump(mode="json")) \
        if accelerator.is_main_process else []
    trainer = Trainer(accelerator, model, stage, config.train, stream, data.val, run_dir, sinks)
    if resume_from is not None:
        trainer.resume(resume_from)
    return Run(config, accelerator, trainer, tokenizer, template, run_dir)


def run_to_the_end(run: Run) -> Path:
    """Train, then save the weights, the loss plot and the run's card."""
    from tunesmith.dist.deepspeed import full_state_dict
    from tunesmith.model.load import resolve_source
    from tunesmith.model.save import save_trained
    from tunesmith.model.vision import save_processor_files
    from tunesmith.run_card import write_run_card
    from tunesmith.train.plot import plot_loss

    accelerator = run.accelerator
    run.trainer.run()
    weights = full_state_dict(accelerator, run.trainer.model)  # every process: ZeRO-3 gathers the weights' shards
    if accelerator.is_main_process:
        save_trained(accelerator.unwrap_model(run.trainer.model), run.tokenizer, run.template.source, run.run_dir,
                     weights)
        save_processor_files(resolve_source(run.config.model).location, run.run_dir)
        plot_loss(run.run_dir)
        write_run_card(run.run_dir, run.config)
        accelerator.print(f"run saved in {run.run_dir}")
    # The process group is closed before the processes exit: left open, gloo's and DeepSpeed's threads can
    # outlive the interpreter's teardown and abort a finished run.
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return run.run_dir


def prepare_run_dir(config: RunConfig, keep_existing: bool = False) -> Path:
    """The run folder with this config in it; an earlier run there is refused, replaced, or (resuming) kept."""
    run_dir = Path(config.train.output_dir)
    # A folder holding only a config file (as a launcher like the web UI writes it) holds no run yet.
    if run_dir.exists() and any(p.name != CONFIG_FILE for p in run_dir.iterdir()) and not keep_existing:
        if not config.train.overwrite:
            raise TunesmithError(
                f"output folder {run_dir} already holds files; set train.overwrite=true to replace them "
                "or choose another train.output_dir"
            )
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / CONFIG_FILE).write_text(dump_config(config), encoding="utf-8")
    return run_dir
