"""The output head and the log-softmax of the target tokens as one autograd function, for a plain float32 head.

The chunked head of train/token_logps.py calls the head module chunk by chunk and lets autograd do the rest:
each chunk allocates its logits, their log-softmax, and in the backward pass the recomputed logits, the
log-softmax again and its gradient, all tokens x vocab sized, all freed at once. glibc's malloc (before 2.38)
cannot hand a freed block back to a request of the same size when the request needs 64-byte alignment, as every
PyTorch CPU tensor does: each chunk's blocks then land on fresh heap, and with the heap kept for speed (large
MALLOC_MMAP_THRESHOLD_) a step's chunks stacked up ~16 MB each (256 MB on the bench's tiny Llama).

Here one chunk-sized buffer serves every chunk, in the forward and in the backward pass: the logits are
computed into it and turned into probabilities in place. While they are at hand the forward pass also computes
each token's d logp / d hidden ((onehot - softmax) / temperature @ weight, tokens x hidden): the backward pass
only scales it by the upstream gradient. So a frozen head (LoRA) costs two matrix products per chunk, not the
three of recomputing the logits in backward (logits, again, input gradient), the third of which autograd's
path avoids only by keeping all the logits. A trained head's weight gradient sums over tokens with their
upstream factors: where the caller sums the log-probs with one factor for all (`summed`: sft and pt's cross
entropy) the forward pass computes that sum too (vocab x hidden, one product per chunk) and the backward pass
scales it, three products per chunk in all; otherwise (dpo, kto, online stages, or a caller whose factors turn
out unequal) the backward pass recomputes each chunk's logits for it, four in all. What is kept for the backward
pass is that gradient per token (tokens x hidden), the targets, one log-sum-exp per token and, for a trained
head, the hidden states and the weight gradient's sum. Values and gradients equal the module path (tested
against the full-logits formula); it also skips the separate log-softmax pass.

Only a head that is exactly an nn.Linear without bias, with a whole float32 weight (not LoRA-wrapped, sharded by
ZeRO-3 or FSDP, or under autocast) goes this way; every other head keeps the module path, whose calls the
distributed wrappers' hooks see.
"""

from __future__ import annotations

import torch

from tunesmith.dist.sharding import is_sharded


def fuses(head, hidden: torch.Tensor) -> bool:
    """Whether `head` applied to `hidden` can run as the fused function below."""
    weight = getattr(head, "weight", None)
    return (type(head) is torch.nn.Linear and head.bias is None and weight is not None and not is_sharded(weight)
            and tuple(weight.shape) == (head.out_features, head.in_features)
            and weight.dtype == hidden.dtype == torch.float32
            and not torch.is_autocast_enabled(hidden.device.type))


def fused_head_logps(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, temperature: float,
                     chunk_tokens: int, summed: bool = False) -> torch.Tensor:
    """[n] log softmax(hidden @ weight.T / temperature)[targets], `chunk_tokens` rows at a time. `summed`: the
    caller sums them with one factor for all (cross entropy), so a trained weight's gradient is summed here."""
    grad = torch.is_grad_enabled()  # inside the function's forward it is off
    return _HeadLogps.apply(hidden, weight, targets, temperature, chunk_tokens,
                            grad and hidden.requires_grad, grad and weight.requires_grad, summed)


class _HeadLogps(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, temperature: float, chunk_tokens: int, wants_hidden: bool,
                wants_weight: bool, summed: bool):
        count = hidden.shape[0]
        logps = hidden.new_empty(count)
        log_sum_exp = hidden.new_empty(count)
        # d logp_t / d hidden_t, one row per token: the input gradient up to each token's upstream factor
        hidden_jacobian = torch.empty_like(hidden) if wants_hidden else None
        # sum_t d logp_t / d weight: the weight's gradient when every token's upstream factor is the same
        weight_jacobian = torch.zeros_like(weight) if wants_weight and summed else None
        buffer = hidden.new_empty(min(chunk_tokens, count), weight.shape[0])
        for start in range(0, count, chunk_tokens):
            rows = slice(start, start + chunk_tokens)
            logits = _scaled_logits(hidden[rows], weight, temperature, buffer)
            target = logits.gather(1, targets[rows, None]).squeeze(1)
            top = logits.amax(1)
            sums = logits.sub_(top[:, None]).exp_().sum(1)
            log_sum_exp[rows] = sums.log().add_(top)
            logps[rows] = target - log_sum_exp[rows]
            if wants_hidden or weight_jacobian is not None:  # while the probabilities are at hand
                probs = logits.div_(sums[:, None])
                probs.scatter_add_(1, targets[rows, None], probs.new_full((probs.shape[0], 1), -1.0))
                if wants_hidden:  # (onehot - softmax) / temperature @ weight
                    torch.mm(probs, weight, out=hidden_jacobian[rows]).div_(-temperature)
                if weight_jacobian is not None:  # sum_t (onehot_t - softmax_t)^T hidden_t, / temperature below
                    weight_jacobian.addmm_(probs.T, hidden[rows])
        if weight_jacobian is not None:
            weight_jacobian.div_(-temperature)
        ctx.save_for_backward(hidden if wants_weight else None, weight if wants_weight else None, targets,
                              log_sum_exp, hidden_jacobian, weight_jacobian)
        ctx.temperature, ctx.chunk_tokens = temperature, chunk_tokens
        return logps

    @staticmethod
    def backward(ctx, grad):
        hidden, weight, targets, log_sum_exp, hidden_jacobian, weight_jacobian = ctx.saved_tensors
        grad_hidden = hidden_jacobian * grad[:, None] if ctx.needs_input_grad[0] else None
        grad_weight = None
        if ctx.needs_input_grad[1] and weight_jacobian is not None and _one_factor(grad):
            grad_weight = weight_jacobian * (grad[0] if grad.numel() else 0.0)
        elif ctx.needs_input_grad[1]:  # the weight's gradient sums over tokens: it needs the upstream factors
            grad_weight = torch.zeros_like(weight)
            count = hidden.shape[0]
            buffer = hidden.new_empty(min(ctx.chunk_tokens, count), weight.shape[0])
            for start in range(0, count, ctx.chunk_tokens):
                rows = slice(start, start + ctx.chunk_tokens)
                # d logp_t / d logits = (onehot_t - softmax) / temperature, scaled by each token's upstream gradient
                delta = _scaled_logits(hidden[rows], weight, ctx.temperature, buffer)
                delta.sub_(log_sum_exp[rows, None]).exp_()
                delta.scatter_add_(1, targets[rows, None], delta.new_full((delta.shape[0], 1), -1.0))
                delta.mul_(grad[rows, None] / -ctx.temperature)
                grad_weight.addmm_(delta.T, hidden[rows])
        return grad_hidden, grad_weight, None, None, None, None, None, None


def _one_factor(grad: torch.Tensor) -> bool:
    """Whether every token has the same upstream gradient (checked: a caller's promise is not enough)."""
    return grad.numel() == 0 or bool(grad.amin() == grad.amax())


def _scaled_logits(hidden: torch.Tensor, weight: torch.Tensor, temperature: float,
                   buffer: torch.Tensor) -> torch.Tensor:
    logits = torch.mm(hidden, weight.T, out=buffer[:hidden.shape[0]])
    return logits.div_(temperature) if temperature != 1.0 else logits
