"""PPO against a reward model: sample replies to prompts, score them, then several clipped-surrogate epochs
per rollout batch with a value head on the policy and a per-token KL penalty against the reference.

On the shared loop: each step's window is one prompt batch, made into a rollout here, and trained on for
`stage.epochs` optimizer updates."""

from __future__ import annotations

from pathlib import Path

import torch

from tunesmith.data.records import Encoded
from tunesmith.dist.collectives import gather_rows
from tunesmith.dist.generation import whole_weights
from tunesmith.errors import TunesmithError
from tunesmith.model.reference import Reference, unwrap
from tunesmith.model.value_head import ValueHeadModel, new_head
from tunesmith.train.losses import masked_mean, ppo_policy_losses, ppo_value_losses
from tunesmith.train.stages import ppo_rollout as rollouts
from tunesmith.train.stages.base import Stage, check_online_engine, reference_settings, refuse_rm_under_zero3

PROMPT = "prompt"  # meta: (messages, tools) of the prompt, for the reward model to re-render
INDEX = "index"  # meta: the prompt's number in its split, which seeds its replies' random streams


class PpoStage(Stage):
    name = "ppo"
    record_kind = "conversation"  # prompts: every message before the last assistant reply
    eval_metric, eval_higher_is_better = "eval_reward", True

    def __init__(self, config=None):
        super().__init__(config)
        self.reference = self.scorer = self.normalizer = None
        self.stop_ids, self.tokenizer, self.seed = [], None, 0

    def encode(self, record, template, data):
        messages = list(record.messages)
        while messages and messages[-1]["role"] == "assistant":
            messages.pop()
        ids = template.prompt_ids(messages, record.tools)
        truncated = len(ids) > data.max_length
        ids = ids[-data.max_length:]  # a long prompt loses its oldest tokens; replies add stage.sampling.max_new_tokens
        # Labels are the prompt itself only so that the data layer keeps the sample: PPO trains on rollouts.
        return Encoded(ids, list(ids), meta={PROMPT: (messages, record.tools), "prompt_truncated": truncated})

    def collate(self, samples, pad_id):
        """Left-padded prompts (generation continues from the right end) and their messages."""
        width = max(len(sample.input_ids) for sample in samples)
        input_ids = torch.full((len(samples), width), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(samples), width), dtype=torch.long)
        for row, sample in enumerate(samples):
            input_ids[row, width - len(sample.input_ids):] = torch.tensor(sample.input_ids)
            attention_mask[row, width - len(sample.input_ids):] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask,
                "prompts": [sample.meta[PROMPT] for sample in samples],
                "index": [sample.meta.get(INDEX, 0) for sample in samples]}

    @property
    def updates_per_window(self) -> int:
        return self.config.epochs

    def check(self, config, data) -> None:
        check_online_engine(self.name, config)
        refuse_rm_under_zero3("stage.reward_model", config)
        if config.train.grad_accum > 1:
            raise TunesmithError("stage ppo takes one rollout batch per step and does not accumulate; set "
                                 "train.grad_accum: 1 and raise train.batch_size for larger rollouts")

    def count_units(self, batch):
        """Prompts of a prompt batch; reply tokens of a rollout."""
        if "reply_mask" in batch:
            return int(batch["reply_mask"].sum())
        return int(batch["input_ids"].shape[0])

    def prepare(self, model, data, config, device):
        from tunesmith.data.template import ChatTemplate
        from tunesmith.model.load import load_tokenizer

        for samples in (data.train, data.val):
            for index, sample in enumerate(samples):
                sample.meta[INDEX] = index
        truncated = sum(1 for sample in data.train + data.val if sample.meta.get("prompt_truncated"))
        if truncated:
            print(f"ppo: {truncated} prompts truncated from the left to fit data.max_length")
        template = ChatTemplate(load_tokenizer(config.model), config.model.template)
        self.stop_ids, self.tokenizer, self.seed = template.stop_token_ids(), template.tokenizer, config.train.seed
        self.reference = Reference(model, reference_settings(config)).to(device)
        self.scorer = load_reward_scorer(Path(self.config.reward_model), template.tokenizer, device,
                                         config.model.trust_remote_code)
        self.normalizer = rollouts.RewardNormalizer(self.config.reward_norm, self.config.reward_clip)
        return PolicyWithCritic(model, new_head(model.config.hidden_size, zero=True))

    def window(self, model, batches, step):
        """The step's prompt batch as a rollout; its reward, KL and reply length are the step's stats."""
        (batch,) = batches
        device = next(unwrap(model).parameters()).device
        rollout = self.rollout(model, {key: value.to(device) if torch.is_tensor(value) else value
                                       for key, value in batch.items()}, step, self.accelerator)
        return [rollout], rollout.pop("stats")

    def state_dict(self) -> dict:
        return {"reward_normalizer": self.normalizer.state()}

    def load_state_dict(self, state: dict) -> None:
        self.normalizer.load(state["reward_normalizer"])

    @torch.no_grad()
    def rollout(self, model, batch: dict, step: int, accelerator=None) -> dict:
        """Replies sampled from the policy with their scores, old log-probs and values, and advantages.

        Each process generates replies to its own prompts; rewards, advantages and stats are then computed over
        the rows of all processes (see `batch_statistics`), as one process with the whole batch would.
        """
        ppo, policy = self.config, unwrap(model)
        was_training = policy.training
        policy.eval()
        with whole_weights(model):
            out = rollouts.generate(policy.backbone, self.tokenizer, batch, ppo, self.stop_ids, self.seed, step)
        mask = out["reply_mask"]
        scores = self.scorer(batch["prompts"], out["reply"], mask)
        scored = policy(out["input_ids"], out["attention_mask"], out["position_ids"], out["reply"], ppo.sampling.temperature)
        logps, values = scored["logps"], scored["values"] * mask
        with self.reference.model(policy.backbone) as network:
            ref_logps = rollouts.reply_forward(network, out, ppo.sampling.temperature)["logps"]
        policy.train(was_training)
        local = {"scores": scores, "logps": logps, "ref_logps": ref_logps, "values": values, "mask": mask}
        adv, returns, out["stats"] = self.batch_statistics(local, accelerator)
        out.update(old_logps=logps, old_values=values, advantages=adv, returns=returns)
        return out

    @torch.no_grad()
    def evaluate(self, model, samples, batch_size, collate=None, device=None, autocast=None) -> dict[str, float]:
        """Mean reward-model score of one reply per validation prompt, sampled from a fixed stream of random
        numbers (so evaluations along the run compare like with like); raw scores: the reward normaliser does
        not learn from validation prompts."""
        policy = unwrap(model)
        was_training = policy.training
        policy.eval()
        device = next(policy.parameters()).device
        scores = []
        for start in range(0, len(samples), batch_size):
            batch = self.collate(samples[start:start + batch_size], self.tokenizer.pad_token_id or 0)
            batch = {key: value.to(device) if torch.is_tensor(value) else value for key, value in batch.items()}
            with whole_weights(model):
                out = rollouts.generate(policy.backbone, self.tokenizer, batch, self.config, self.stop_ids,
                                        self.seed, "eval")
            scores.append(self.scorer(batch["prompts"], out["reply"], out["reply_mask"]).float())
        policy.train(was_training)
        scores = torch.cat(scores)
        return {"eval_reward": float(scores.mean()), "eval_reward_std": float(scores.std()) if len(scores) > 1 else 0.0}

    def batch_statistics(self, local: dict, accelerator) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """(advantages, returns, stats) of this process's rows, with reward normalisation, whitening and stats
        taken over every process's rows: the same numbers one process with the whole batch computes."""
        ppo, width = self.config, local["mask"].shape[1]
        every, mine = gather_rows(accelerator, local)
        mask = every["mask"]
        rewards, kl = rollouts.token_rewards(self.normalizer(every["scores"]), every["logps"], every["ref_logps"],
                                             mask, ppo.kl_coef)
        adv, returns = rollouts.advantages(rewards, every["values"], mask, ppo)
        stats = {"reward": float(every["scores"].mean()), "kl": float(kl.sum(-1).mean()),
                 "reply_length": float(mask.sum(-1).mean())}
        return adv[mine, :width], returns[mine, :width], stats

    def loss(self, model, batch):
        """(summed over reply tokens: policy loss + value_coef * value loss, summed metrics)."""
        ppo, mask = self.config, batch["reply_mask"]
        # Through the (possibly wrapped) model's own forward: DDP syncs gradients only for passes it sees.
        scored = model(batch["input_ids"], batch["attention_mask"], batch["position_ids"], batch["reply"],
                       ppo.sampling.temperature, with_entropy=True)
        logps, values = scored["logps"], scored["values"]
        pg, pg_clipped = ppo_policy_losses(logps, batch["old_logps"], batch["advantages"], ppo.clip_range)
        vf, vf_clipped = ppo_value_losses(values, batch["old_values"], batch["returns"], ppo.value_clip_range)
        tokens = mask.sum()
        metrics = {
            "policy_loss": (pg * mask).sum().detach(),
            "value_loss": (vf * mask).sum().detach(),
            "clip_frac": (pg_clipped * mask).sum(),
            "value_clip_frac": (vf_clipped * mask).sum(),
            "entropy": masked_mean(scored["entropy"], mask) * tokens,
        }
        return ((pg + ppo.value_coef * vf) * mask).sum(), metrics


class PolicyWithCritic(ValueHeadModel):
    """The policy and its value head, whose forward is what PPO's loss needs: a distributed wrapper (DDP)
    then sees every pass that needs gradients."""

    def forward(self, input_ids, attention_mask, position_ids, reply, temperature: float, with_entropy: bool = False):
        """{"logps", "values", and with `with_entropy` "entropy"}: [B, R] each, for the reply tokens (the last R
        columns of input_ids), log-probs at `temperature` (see `rollouts.reply_forward`)."""
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids, "reply": reply}
        return rollouts.reply_forward(self.backbone, batch, temperature, self.values, with_entropy)


def load_reward_scorer(folder: Path, policy_tokenizer, device, trust_remote_code: bool = False) -> rollouts.Scorer:
    """The rm run in `folder` as a frozen scorer, with the tokenizer and template it was trained with."""
    from tunesmith.model.reward_model import load_reward_model

    return rollouts.Scorer(*load_reward_model(folder, device, trust_remote_code=trust_remote_code), policy_tokenizer)
