"""The output head and the log-softmax of the target tokens as one autograd function, for a plain float32 head.

The chunked head of train/token_logps.py calls the head module chunk by chunk and lets autograd do the rest:
each chunk allocates its logits, their log-softmax, and in the backward pass the recomputed logits, the
log-softmax again and its gradient, all tokens x vocab sized, all freed at once. glibc's malloc (before 2.38)
cannot hand a freed block back to a request of the same size when the request needs 64-byte alignment, as every
PyTorch CPU tensor does: each chunk's blocks then land on fresh heap, and with the heap kept for speed (large
MALLOC_MMAP_THRESHOLD_) a step's chunks stacked up ~16 MB each (256 MB on the bench's tiny Llama).

Here one chunk-sized buffer serves every chunk, in the forward and in the backward pass: the logits are
computed into it, turned into probabilities in place, and into their own gradient in place. What is kept for
the backward pass is the hidden states, the targets and one log-sum-exp per token. Values and gradients equal the
module path (tested against the full-logits formula); it also skips the separate log-softmax pass.

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
                     chunk_tokens: int) -> torch.Tensor:
    """[n] log softmax(hidden @ weight.T / temperature)[targets], `chunk_tokens` rows at a time."""
    return _HeadLogps.apply(hidden, weight, targets, temperature, chunk_tokens)


class _HeadLogps(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, temperature: float, chunk_tokens: int):
        count = hidden.shape[0]
        logps = hidden.new_empty(count)
        log_sum_exp = hidden.new_empty(count)
        buffer = hidden.new_empty(min(chunk_tokens, count), weight.shape[0])
        for start in range(0, count, chunk_tokens):
            rows = slice(start, start + chunk_tokens)
            logits = _scaled_logits(hidden[rows], weight, temperature, buffer)
            target = logits.gather(1, targets[rows, None]).squeeze(1)
            top = logits.amax(1)
            log_sum_exp[rows] = logits.sub_(top[:, None]).exp_().sum(1).log_().add_(top)
            logps[rows] = target - log_sum_exp[rows]
        ctx.save_for_backward(hidden, weight, targets, log_sum_exp)
        ctx.temperature, ctx.chunk_tokens = temperature, chunk_tokens
        return logps

    @staticmethod
    def backward(ctx, grad):
        hidden, weight, targets, log_sum_exp = ctx.saved_tensors
        wants_hidden, wants_weight = ctx.needs_input_grad[:2]
        grad_hidden = torch.empty_like(hidden) if wants_hidden else None
        grad_weight = torch.zeros_like(weight) if wants_weight else None
        count = hidden.shape[0]
        buffer = hidden.new_empty(min(ctx.chunk_tokens, count), weight.shape[0])
        for start in range(0, count, ctx.chunk_tokens):
            rows = slice(start, start + ctx.chunk_tokens)
            # d logp_t / d logits = (onehot_t - softmax) / temperature, scaled by each token's upstream gradient
            delta = _scaled_logits(hidden[rows], weight, ctx.temperature, buffer)
            delta.sub_(log_sum_exp[rows, None]).exp_()
            delta.scatter_add_(1, targets[rows, None], delta.new_full((delta.shape[0], 1), -1.0))
            delta.mul_(grad[rows, None] / -ctx.temperature)
            if wants_hidden:
                torch.mm(delta, weight, out=grad_hidden[rows])
            if wants_weight:
                grad_weight.addmm_(delta.T, hidden[rows])
        return grad_hidden, grad_weight, None, None, None


def _scaled_logits(hidden: torch.Tensor, weight: torch.Tensor, temperature: float,
                   buffer: torch.Tensor) -> torch.Tensor:
    logits = torch.mm(hidden, weight.T, out=buffer[:hidden.shape[0]])
    return logits.div_(temperature) if temperature != 1.0 else logits
