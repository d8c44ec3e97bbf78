"""GRPO: sample G completions per prompt, score them with reward functions, and push up the completions
that beat their group's mean (the loss is in grpo_loss.py; generation in grpo_rollout.py).

Each step's window is generated here, with the policy in eval mode, then trained `num_iterations` times.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from tunesmith.data.records import Encoded
from tunesmith.dist.collectives import gather_rows
from tunesmith.dist.generation import whole_weights
from tunesmith.errors import TunesmithError
from tunesmith.model.reference import Reference, unwrap
from tunesmith.train.rewards import build_rewards, needed_columns, score_completions
from tunesmith.train.stages import grpo_loss as losses
from tunesmith.train.stages import grpo_rollout as rollouts
from tunesmith.train.stages.base import Stage, check_online_engine, reference_settings, refuse_rm_under_zero3
from tunesmith.train.token_logps import LogpsModel, tail_logps

PROMPT, COLUMNS, INDEX = "prompt", "columns", "index"  # meta: the prompt's messages, its columns, its number
SAMPLES_FILE = "samples.jsonl"


class GrpoStage(Stage):
    name = "grpo"
    record_kind = "conversation"  # the prompt is every message before the last assistant reply (the answer)
    eval_metric, eval_higher_is_better = "eval_reward", True

    def __init__(self, config=None):
        super().__init__(config)
        self.rewards, self.reference, self.template, self.seed, self.samples_path = [], None, None, 0, None
        self.sampler = rollouts.HfRollout()

    @property
    def updates_per_window(self) -> int:
        return self.config.num_iterations

    def stream_batch_size(self, batch_size: int) -> int:
        return batch_size // self.config.num_generations  # train.batch_size counts completions

    def encode(self, record, template, data):
        messages, answer = list(record.messages), None
        if messages and messages[-1]["role"] == "assistant":
            answer = messages.pop()["content"]
        ids = template.prompt_ids(messages, record.tools)
        # The row's own columns reach the reward functions; `answer` falls back to the assistant reply.
        columns = {"answer": answer, **{key: value for key, value in record.columns.items() if value is not None}}
        meta = {PROMPT: messages, COLUMNS: columns, "prompt_truncated": len(ids) > data.max_length}
        ids = ids[-data.max_length:]  # a long prompt loses its oldest tokens
        return Encoded(ids, list(ids), meta=meta)  # labels only keep the sample: GRPO trains on completions

    def collate(self, samples, pad_id):
        return {"prompt_ids": [s.input_ids for s in samples], "prompts": [s.meta[PROMPT] for s in samples],
                "columns": [s.meta[COLUMNS] for s in samples], "index": [s.meta.get(INDEX, 0) for s in samples]}

    def count_units(self, batch):
        grpo = self.config
        return losses.loss_units(batch["completion_mask"], grpo.token_averaging, grpo.sampling.max_new_tokens)

    def check(self, config, data) -> None:
        """Load the reward functions (a user's file runs now) and check the data has the columns they need,
        before the model loads."""
        check_online_engine(self.name, config)
        if self.config.rollout_backend == "vllm":
            from tunesmith.infer.vllm_engine import require_vllm

            require_vllm("stage.rollout_backend vllm", "set stage.rollout_backend hf")
        if any(Path(spec).is_dir() for spec in self.config.reward_funcs):  # an rm run folder
            refuse_rm_under_zero3("stage.reward_funcs", config)
        self.rewards = build_rewards(self.config, self.config.sampling.max_new_tokens, self._rm_scorer(config))
        for column, functions in needed_columns(self.rewards).items():
            missing = [i for i, s in enumerate(data.train + data.val) if s.meta[COLUMNS].get(column) is None]
            if missing:
                raise TunesmithError(
                    f"reward {', '.join(functions)} needs the column '{column}', which sample {missing[0]} (and "
                    f"{len(missing) - 1} more) lacks; give each prompt an answer (the assistant reply / "
                    "'output' column in dataset_info.json) or drop that reward")

    def prepare(self, model, data, config, device):
        from tunesmith.data.template import ChatTemplate
        from tunesmith.model.load import load_tokenizer

        for samples in (data.train, data.val):
            for index, sample in enumerate(samples):
                sample.meta[INDEX] = index
        if not self.rewards:
            self.check(config, data)
        self.template = ChatTemplate(load_tokenizer(config.model), config.model.template)
        self.seed, self.samples_path = config.train.seed, Path(config.train.output_dir) / SAMPLES_FILE
        if self.config.rollout_backend == "vllm":
            self.sampler = self._vllm_sampler(model, config)
        if self.config.beta:  # beta 0: no reference model at all
            self.reference = Reference(model, reference_settings(config)).to(device)
        for reward in self.rewards:
            if hasattr(reward.function, "to"):  # an rm run's scorer
                reward.function.to(device)
        return LogpsModel(model)  # the log-probs inside the model's forward, where distributed wrappers see it

    @torch.no_grad()
    def window(self, model, batches: list[dict], step: int) -> tuple[list[dict], dict[str, float]]:
        """Completions for every prompt batch of the window, scored, with advantages over all processes' groups
        (and old / reference log-probs where needed); plus the window's reward and length statistics."""
        policy = unwrap(model)
        was_training = policy.training
        policy.eval()
        with whole_weights(model):
            self.sampler.sync(policy.backbone)  # the causal LM inside LogpsModel, under its own names
            generated = [self._rollout(policy, batch, step) for batch in batches]
        local = {"rewards": torch.cat([r.pop("rewards") for r in generated]),
                 "truncated": torch.cat([r.pop("truncated") for r in generated]).float(),
                 "lengths": torch.cat([r.pop("lengths") for r in generated])}
        for name in generated[0]["per_function"]:
            local[f"reward/{name}"] = torch.cat([r["per_function"][name] for r in generated])
        every, mine = gather_rows(self.accelerator, local)
        advantages = losses.group_advantages(every["rewards"], self.config.num_generations,
                                             self.config.scale_rewards)[mine].float()
        out, start = [], 0
        for rollout in generated:
            rows = rollout["batch"]["completion"].shape[0]
            out.append(self._training_batch(policy, rollout["batch"], advantages[start:start + rows]))
            start += rows
        policy.train(was_training)
        self._log_samples(step, generated[0])
        return out, window_stats(every, self.config.num_generations, self.config.sampling.max_new_tokens)

    def _rollout(self, policy, batch: dict, step) -> dict:
        grpo, tokenizer = self.config, self.template.tokenizer
        results = self.sampler.sample(policy, tokenizer, batch["prompt_ids"], batch["index"], grpo.sampling,
                                      grpo.num_generations, self.seed, step, self.template.stop_token_ids())
        group = grpo.num_generations
        prompts = [p for p in batch["prompts"] for _ in range(group)]
        names = dict.fromkeys(key for c in batch["columns"] for key in c)  # rows of mixed datasets differ
        columns = {key: [c.get(key) for c in batch["columns"] for _ in range(group)] for key in names}
        ids = [r.token_ids for r in results]
        texts = [r.text for r in results]
        total, per_function = score_completions(self.rewards, prompts, texts, {**columns, "completion_ids": ids})
        truncated = torch.tensor([r.finish_reason == "length" for r in results])
        tensors = rollouts.completion_batch(batch["prompt_ids"], ids, group, tokenizer.pad_token_id or 0)
        if grpo.mask_truncated_completions:
            tensors["completion_mask"] *= (~truncated).float().unsqueeze(1)
        return {"batch": tensors, "rewards": total, "per_function": per_function, "truncated": truncated,
                "lengths": torch.tensor([float(len(i)) for i in ids]), "prompts": prompts, "texts": texts}

    def _training_batch(self, policy, batch: dict, advantages: torch.Tensor) -> dict:
        """The rollout's tensors with advantages, and the log-probs the loss compares against."""
        grpo, device = self.config, next(policy.parameters()).device
        batch = {key: value.to(device) for key, value in batch.items()}
        batch["advantages"] = advantages.to(device)
        if grpo.num_iterations > 1:  # later updates see a moved policy: keep this one's log-probs
            batch["old_logps"] = tail_logps(policy, batch, batch["completion"], grpo.sampling.temperature)
        if self.reference is not None:
            with self.reference.model(policy) as network:
                batch["ref_logps"] = tail_logps(network, batch, batch["completion"], grpo.sampling.temperature)
        return batch

    def loss(self, model, batch):
        """(loss summed over the window's units (see grpo_loss), summed clip ratio / entropy / KL)."""
        grpo = self.config
        logps, entropy = tail_logps(model, batch, batch["completion"], grpo.sampling.temperature, with_entropy=True)
        epsilon_high = grpo.epsilon_high if grpo.epsilon_high is not None else grpo.epsilon
        token_losses, clipped, kl = losses.grpo_token_losses(logps, batch.get("old_logps"), batch.get("ref_logps"),
                                                             batch["advantages"], grpo.epsilon, epsilon_high, grpo.beta)
        mask = batch["completion_mask"]
        loss = losses.reduce_token_losses(token_losses, mask, grpo.token_averaging, grpo.sampling.max_new_tokens)
        metrics = {"clip_ratio": self._metric(clipped.float(), mask), "entropy": self._metric(entropy, mask)}
        if kl is not None:
            metrics["kl"] = self._metric(kl.detach(), mask)
        return loss, metrics

    def _metric(self, values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """A per-token quantity summed like the loss's units, so the loop's division gives its mean (per
        completion for grpo / bnpo / dr_grpo, per token for dapo)."""
        grpo = self.config
        if grpo.token_averaging == "dapo":
            return (values * mask).sum()
        per_completion = (values * mask).sum(-1) / mask.sum(-1).clamp(min=1)
        return per_completion.sum() * (grpo.sampling.max_new_tokens if grpo.token_averaging == "dr_grpo" else 1)

    @torch.no_grad()
    def evaluate(self, model, samples, batch_size, collate=None, device=None, autocast=None) -> dict[str, float]:
        """Mean reward (total and per function) of G completions per validation prompt, from a fixed stream
        of random numbers so that evaluations along the run compare like with like."""
        policy = unwrap(model)
        was_training = policy.training
        policy.eval()
        prompts_per_batch = max(1, self.stream_batch_size(batch_size))
        totals, per_function = [], {}
        with whole_weights(model):
            self.sampler.sync(policy.backbone)  # the causal LM inside LogpsModel, under its own names
            for start in range(0, len(samples), prompts_per_batch):
                rollout = self._rollout(policy, self.collate(samples[start:start + prompts_per_batch], 0), "eval")
                totals.append(rollout["rewards"])
                for name, values in rollout["per_function"].items():
                    per_function.setdefault(name, []).append(values)
        policy.train(was_training)
        record = {"eval_reward": float(torch.nanmean(torch.cat(totals)))}
        record.update({f"eval_reward/{name}": float(torch.nanmean(torch.cat(v))) for name, v in per_function.items()})
        return record

    def state_dict(self) -> dict:
        """How much of samples.jsonl the checkpoint's steps wrote: a resumed run cuts what later steps added."""
        return {"samples_bytes": self.samples_path.stat().st_size if self.samples_path.is_file() else 0}

    def load_state_dict(self, state: dict) -> None:
        if self.samples_path.is_file() and (self.accelerator is None or self.accelerator.is_main_process):
            with self.samples_path.open("r+b") as file:
                file.truncate(state.get("samples_bytes", 0))

    def _log_samples(self, step: int, rollout: dict) -> None:
        count = self.config.samples_per_step
        if not count or (self.accelerator is not None and not self.accelerator.is_main_process):
            return
        with self.samples_path.open("a", encoding="utf-8") as file:
            for prompt, text in list(zip(rollout["prompts"], rollout["texts"]))[:count]:
                file.write(json.dumps({"step": step + 1, "prompt": prompt[-1]["content"], "completion": text}) + "\n")

    def _vllm_sampler(self, model, config):
        """A vLLM engine beside the policy, started from the same checkpoint; prompts plus replies fit its context."""
        from tunesmith.model.load import resolve_source
        from tunesmith.train.stages.vllm_rollout import VllmRollout

        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        processes = torch.distributed.get_world_size() if distributed else 1
        return VllmRollout(model, str(resolve_source(config.model).location),
                           config.data.max_length + self.config.sampling.max_new_tokens, self.config.vllm_gpu_memory,
                           config.train.seed, processes)

    def _rm_scorer(self, config):
        """Turns an rm run folder into a reward function over completion ids (see grpo_rm)."""
        from tunesmith.train.stages.grpo_rm import rm_reward_loader

        return rm_reward_loader(config.model)


def window_stats(every: dict, group: int, max_new_tokens: int) -> dict[str, float]:
    """What a step logs about its completions, over all processes' rows."""
    stats = {}
    for key, values in every.items():
        if key == "rewards" or key.startswith("reward/"):
            name = "reward" if key == "rewards" else key
            stats[name], stats[f"{name}_std"] = float(torch.nanmean(values)), float(_std(values))
    lengths = every["lengths"]
    stats.update(frac_reward_zero_std=float(losses.equal_reward_groups(every["rewards"], group).float().mean()),
                 completion_length=float(lengths.mean()), completion_length_max=float(lengths.max()),
                 completion_clipped=float(every["truncated"].float().mean()))
    return stats


def _std(values: torch.Tensor) -> torch.Tensor:
    scored = values[~values.isnan()]
    return scored.std() if scored.numel() > 1 else torch.zeros(())
