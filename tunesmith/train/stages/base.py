"""What a stage is: how to encode a record, how to batch, and the loss of a batch.

Stages never look at the method (lora / full / ...): the model they get is already prepared.
The loop divides every summed quantity a stage returns by the global `count_units` of the accumulation
window (target tokens for token stages, pairs for preference stages), so accumulation is exact.
Online stages (ppo, grpo) also make each window's batches themselves (`window`: they generate there) and may
train several optimizer updates on one window (`updates_per_window`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch

from tunesmith.data.collator import TARGET_INDEX, add_pixels, pad_batch
from tunesmith.errors import TunesmithError
from tunesmith.train.losses import cross_entropy_sum
from tunesmith.train.token_logps import LogpsModel, token_logps

if TYPE_CHECKING:  # names for the annotations only: the stage protocol's types, without importing them at run time
    from tunesmith.config.schema import DataConfig, RunConfig
    from tunesmith.config.stage_kinds import StageConfig
    from tunesmith.data.dataset import PreparedData
    from tunesmith.data.records import Conversation, Encoded, KtoExample, Preference, Text
    from tunesmith.data.template import ChatTemplate

    Record = Conversation | Text | Preference | KtoExample
    Batch = dict[str, torch.Tensor]


class Stage:
    name = ""
    record_kind = "conversation"  # what data/formats should produce: conversation | text | preference | kto
    reports_perplexity = False  # only where the loss is a mean per-token cross entropy
    takes_images = False  # whether records with images may reach `encode` (data/media_render.py)
    updates_per_window = 1  # optimizer updates the loop takes on each window
    eval_metric, eval_higher_is_better = "eval_loss", False  # what early stopping and best-eval follow

    def __init__(self, config: StageConfig | None = None):
        self.config = config  # the run's StageConfig (knobs such as beta); None for stages without any
        self.accelerator = None  # the run's, set by the loop: for statistics over all processes' rows
        self.media = None  # a vision-language model's image side (data/vision_processor.py), set by the run

    def check(self, config: RunConfig, data: PreparedData) -> None:
        """Refuse a run this stage cannot do, once the data is read and before the model loads."""

    def stream_batch_size(self, batch_size: int) -> int:
        """Samples per batch the data stream gives for `train.batch_size` (grpo: prompts, not completions)."""
        return batch_size

    def prepare(self, model: torch.nn.Module, data: PreparedData, config: RunConfig,
                device: torch.device) -> torch.nn.Module:
        """The model to train, made ready once data and weights are loaded (e.g. a value head added, a
        reference model built). `data` is the PreparedData, `config` the RunConfig."""
        return model

    def encode(self, record: Record, template: ChatTemplate, data: DataConfig) -> Encoded:
        raise NotImplementedError

    def encode_many(self, records: list[Record], template: ChatTemplate, data: DataConfig) -> list[Encoded]:
        """`encode` of each record; stages whose tokenization batches well override it."""
        return [self.encode(record, template, data) for record in records]

    def collate(self, samples: list[Encoded], pad_id: int) -> Batch:
        raise NotImplementedError

    def with_media(self, batch: Batch, rows: list[Encoded]) -> Batch:
        """The batch with its rows' pixels when the model reads images (rows: the batch's samples, in order)."""
        return batch if self.media is None else add_pixels(batch, rows, self.media)

    def count_units(self, batch: Batch) -> int:
        """How many units the batch's loss is summed over (known on the host before the forward pass)."""
        raise NotImplementedError

    def loss(self, model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(summed loss, summed extra metrics) over the batch's units."""
        raise NotImplementedError

    def window(self, model: torch.nn.Module, batches: list[Batch], step: int) -> tuple[list[Batch], dict[str, float]]:
        """(the batches the loop trains step `step` + 1 on, stats to log with it) from the data stream's batches
        of the window; online stages generate their rollouts here."""
        return batches, {}

    def evaluate(self, model: torch.nn.Module, samples: list[Encoded], batch_size: int,
                 collate: Callable[[list[Encoded]], Batch], device: torch.device, autocast) -> dict[str, float]:
        """The validation record: mean loss and extra metrics over the samples' units."""
        from tunesmith.train.batches import eval_batches
        from tunesmith.train.evaluation import evaluate_stage

        record, _ = evaluate_stage(self, model, eval_batches(samples, batch_size, collate), device, autocast)
        return record

    def state_dict(self) -> dict:
        """What a checkpoint keeps of the stage's own state (e.g. running statistics), as JSON values."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what `state_dict` gave, when resuming."""


def check_online_engine(stage_name: str, config) -> None:
    """Online stages generate with the whole policy in every process, outside the engine's forward: DDP and
    DeepSpeed (whose ZeRO-3 shards are gathered for the rollout, see dist/generation.py) allow it; FSDP does not."""
    if config.dist.engine not in ("ddp", "deepspeed"):
        raise TunesmithError(f"stage {stage_name} runs with dist.engine ddp or deepspeed; set dist.engine=ddp (each "
                             "process keeps a whole copy of the policy) or deepspeed (ZeRO-2/3 shard the rest)")


def refuse_rm_under_zero3(source: str, config) -> None:
    """A reward model read from an rm run folder loads partitioned under ZeRO-3 (transformers' integration), and a
    LoRA rm's adapter cannot merge into partitioned weights: not supported yet."""
    if config.dist.engine == "deepspeed" and config.dist.deepspeed.stage == 3:
        raise TunesmithError(f"{source}: a reward model from an rm run folder does not load under ZeRO-3 yet; set "
                             "dist.deepspeed.stage=2 or dist.engine=ddp (or use reward functions, grpo)")


def reference_settings(config) -> dict | None:
    """The DeepSpeed config a frozen reference copy is partitioned with under ZeRO-3 (None without DeepSpeed)."""
    if config.dist.engine != "deepspeed":
        return None
    from tunesmith.dist.accelerator import mixed_precision
    from tunesmith.dist.deepspeed import deepspeed_config

    return deepspeed_config(config.dist.deepspeed, config.train, mixed_precision(config.train.precision))


class TokenStage(Stage):
    """Stages trained by next-token cross entropy on labelled tokens (pt, sft). Their tokenization batches
    well, so they implement `encode_many`, and one record is a batch of one."""

    reports_perplexity = True

    def prepare(self, model: torch.nn.Module, data: PreparedData, config: RunConfig,
                device: torch.device) -> torch.nn.Module:
        return LogpsModel(model)  # the loss inside the model's forward, where distributed wrappers see it

    def encode(self, record, template, data):
        return self.encode_many([record], template, data)[0]

    def encode_many(self, records, template, data):
        raise NotImplementedError

    def collate(self, samples, pad_id):
        return self.with_media(pad_batch(samples, pad_id), samples)

    def count_units(self, batch):
        return batch[TARGET_INDEX].numel()

    def loss(self, model, batch):
        return cross_entropy_sum(token_logps(model, batch, summed=True)), {}
