"""PPO against a reward model: sample replies to prompts, score them, then several clipped-surrogate epochs
per rollout batch with a value head on the policy and a per-token KL penalty against the reference.

On the shared loop: each step's window is one prompt batch, made into a rollout here, and trained on for
`stage.epochs` optimizer updates."""

from __future__ import annotations

from pathlib import Path

import torch

from tunesmith.data.records import Encoded
from tunesmith.dist.collectives import gather_rows
from tunesmith.errors import TunesmithError
from tunesmith.model.reference import Reference, unwrap
from tunesmith.model.value_head import ValueHeadModel, new_head
from tunesmith.train.losses import ppo_policy_losses, ppo_value_losses
from tunesmith.train.stages import ppo_rollout as rollouts
from tunesmith.train.stages.base import Stage, require_whole_policy

PROMPT = "prompt"  # meta: (messages, tools) of the prompt, for the reward model to re-render


class PpoStage(Stage):
    name = "ppo"
    record_kind = "conversation"  # prompts: every message before the last assistant reply

    def __init__(self, config=None):
        super().__init__(config)
        self.reference = self.scorer = self.normalizer = None
        self.stop_ids, self.pad_id = [], 0

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
                "prompts": [sample.meta[PROMPT] for sample in samples]}

    @property
    def updates_per_window(self) -> int:
        return self.config.epochs

    def check(self, config, data) -> None:
        require_whole_policy(self.name, config)
        if config.train.grad_accum > 1:
            raise TunesmithError("stage ppo takes one rollout batch per step and does not accumulate; set "
                                 "train.grad_accum: 1 and raise train.batch_size for larger rollouts")
        if data.val:
            raise TunesmithError("stage ppo has no evaluation yet (its reward normaliser would learn from the "
                                 "validation prompts); set data.val_size: 0")

    def count_units(self, batch):
        """Prompts of a prompt batch; reply tokens of a rollout."""
        if "reply_mask" in batch:
            return int(batch["reply_mask"].sum())
        return int(batch["input_ids"].shape[0])

    def prepare(self, model, data, config, device):
        from tunesmith.data.template import ChatTemplate
        from tunesmith.model.load import load_tokenizer

        truncated = sum(1 for sample in data.train + data.val if sample.meta.get("prompt_truncated"))
        if truncated:
            print(f"ppo: {truncated} prompts truncated from the left to fit data.max_length")
        template = ChatTemplate(load_tokenizer(config.model), config.model.template)
        self.stop_ids, self.pad_id = template.stop_token_ids(), template.tokenizer.pad_token_id
        self.reference = Reference(model).to(device)
        self.scorer = load_reward_scorer(Path(self.config.reward_model), template.tokenizer, device,
                                         config.model.trust_remote_code)
        self.normalizer = rollouts.RewardNormalizer(self.config.reward_norm, self.config.reward_clip)
        return PolicyWithCritic(model, new_head(model.config.hidden_size, zero=True))

    def window(self, model, batches, step):
        """The step's prompt batch as a rollout; its reward, KL and reply length are the step's stats."""
        (batch,) = batches
        device = next(unwrap(model).parameters()).device
        rollout = self.rollout(model, {key: value.to(device) if torch.is_tensor(value) else value
                                       for key, value in batch.items()}, self.accelerator)
        return [rollout], rollout.pop("stats")

    def state_dict(self) -> dict:
        return {"reward_normalizer": self.normalizer.state()}

    def load_state_dict(self, state: dict) -> None:
        self.normalizer.load(state["reward_normalizer"])

    @torch.no_grad()
    def rollout(self, model, batch: dict, accelerator=None) -> dict:
        """Replies sampled from the policy with their scores, old log-probs and values, and advantages.

        Each process generates replies to its own prompts; rewards, advantages and stats are then computed over
        the rows of all processes (see `batch_statistics`), as one process with the whole batch would.
        """
        ppo, policy = self.config, unwrap(model)
        was_training = policy.training
        policy.eval()
        out = rollouts.generate(policy, batch, ppo, self.stop_ids, self.pad_id)
        prompt_len, mask = batch["input_ids"].shape[1], out["reply_mask"]
        scores = self.scorer(batch["prompts"], out["reply"], mask)
        logits, values = policy(out["input_ids"], out["attention_mask"], out["position_ids"], prompt_len,
                                ppo.sampling.temperature)
        logps, values = rollouts.token_logps(logits, out["reply"]), values * mask
        with self.reference.model(policy.backbone) as network:
            ref_logits, _ = rollouts.reply_forward(network, out, prompt_len, ppo.sampling.temperature)
        ref_logps = rollouts.token_logps(ref_logits, out["reply"])
        policy.train(was_training)
        local = {"scores": scores, "logps": logps, "ref_logps": ref_logps, "values": values, "mask": mask}
        adv, returns, out["stats"] = self.batch_statistics(local, accelerator)
        out.update(prompt_len=prompt_len, old_logps=logps, old_values=values, advantages=adv, returns=returns)
        return out

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
        logits, values = model(batch["input_ids"], batch["attention_mask"], batch["position_ids"],
                               batch["prompt_len"], ppo.sampling.temperature)
        logps = rollouts.token_logps(logits, batch["reply"])
        pg, pg_clipped = ppo_policy_losses(logps, batch["old_logps"], batch["advantages"], ppo.clip_range)
        vf, vf_clipped = ppo_value_losses(values, batch["old_values"], batch["returns"], ppo.value_clip_range)
        tokens = mask.sum()
        metrics = {
            "policy_loss": (pg * mask).sum().detach(),
            "value_loss": (vf * mask).sum().detach(),
            "clip_frac": (pg_clipped * mask).sum(),
            "value_clip_frac": (vf_clipped * mask).sum(),
            "entropy": rollouts.entropy(logits.detach(), mask) * tokens,
        }
        return ((pg + ppo.value_coef * vf) * mask).sum(), metrics


class PolicyWithCritic(ValueHeadModel):
    """The policy and its value head, whose forward is what PPO's loss needs: a distributed wrapper (DDP)
    then sees every pass that needs gradients."""

    def forward(self, input_ids, attention_mask, position_ids, prompt_len: int, temperature: float):
        """(logits [B, R, V] / temperature, values [B, R]) at the positions that predict the reply."""
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids}
        return rollouts.reply_forward(self.backbone, batch, prompt_len, temperature, self.values)


def load_reward_scorer(folder: Path, policy_tokenizer, device, trust_remote_code: bool = False) -> rollouts.Scorer:
    """The rm run in `folder` as a frozen scorer, with the tokenizer and template it was trained with."""
    from tunesmith.model.reward_model import load_reward_model

    return rollouts.Scorer(*load_reward_model(folder, device, trust_remote_code=trust_remote_code), policy_tokenizer)
