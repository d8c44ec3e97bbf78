"""Direct preference optimisation and its family: sigmoid (DPO), ipo, hinge against a frozen reference;
orpo and simpo without one. Logs rewards/chosen, rewards/rejected, accuracy and margin per pair."""

from __future__ import annotations

from tunesmith.train.losses import dpo_losses, orpo_losses, simpo_losses
from tunesmith.train.stages.preference import PairStage, build_reference, reference_logps, reply_logps
from tunesmith.train.token_logps import LogpsModel

REFERENCE_FREE = ("orpo", "simpo")
LENGTH_AVERAGED = ("ipo", "orpo", "simpo")  # these losses compare mean log-probs per reply token


class DpoStage(PairStage):
    name = "dpo"
    takes_images = True  # a pair's images are in its shared prompt: both rows carry them

    def __init__(self, config=None):
        super().__init__(config)
        self.reference = None

    def prepare(self, model, data, config, device):
        self.report_truncated(data)
        if self.config.preference_loss not in REFERENCE_FREE:
            self.reference = build_reference(self, model, data, config, device)
        return LogpsModel(model)  # the loss inside the model's forward, where distributed wrappers see it

    def loss(self, model, batch):
        logps, lengths = reply_logps(model, batch)
        kind = self.config.preference_loss
        if kind in LENGTH_AVERAGED:
            logps = logps / lengths.clamp(min=1)
        chosen, rejected = logps.chunk(2)
        if kind == "simpo":
            losses, chosen_rewards, rejected_rewards = simpo_losses(chosen, rejected, self.config.beta,
                                                                    self.config.simpo_gamma)
        elif kind == "orpo":
            losses, chosen_rewards, rejected_rewards = orpo_losses(chosen, rejected, self.config.orpo_lambda)
        else:
            ref = reference_logps(self.reference, model, batch)
            if kind in LENGTH_AVERAGED:
                ref = ref / lengths.clamp(min=1)
            ref_chosen, ref_rejected = ref.chunk(2)
            losses, chosen_rewards, rejected_rewards = dpo_losses(
                chosen, rejected, ref_chosen, ref_rejected, self.config.beta, kind, self.config.label_smoothing)
        return losses.sum(), pair_metrics(chosen_rewards, rejected_rewards)


def pair_metrics(chosen_rewards, rejected_rewards) -> dict:
    """Sums over the batch's pairs; the loop turns them into means over the window."""
    margin = chosen_rewards - rejected_rewards
    return {
        "rewards/chosen": chosen_rewards.sum(),
        "rewards/rejected": rejected_rewards.sum(),
        "accuracy": (margin > 0).float().sum(),
        "margin": margin.sum(),
    }
