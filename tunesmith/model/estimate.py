"""Parameters and peak accelerator memory of a training run, from the config alone (nothing is loaded).

The model is built on the meta device (shapes and dtypes, no storage) and prepared by the configured
method, so parameter counts are exactly what training reports. Memory, in bytes, with
  P_w: bytes of the weights (bitsandbytes layout for quantized linear weights, see model/quantize.py),
  P_g: bytes of the trainable parameters (one gradient each, in the parameter's dtype),
  P_o: optimizer states: AdamW keeps 2 per trainable element in the parameter's dtype; 8-bit AdamW keeps
       2 bytes plus one float32 scale per 256 elements, and float32 states for tensors under 4096 elements,
  A:   activations saved for the backward pass (see `activation_bytes`), for batch_size x max_length tokens,
  Z:   the output head's share: 12 * chunk * vocab (a chunk's float32 logits, their log-softmax and its
       gradient), the head running a chunk of at most train/token_logps.py's LOGIT_ELEMENTS logits at a time
       (chunk = min(tokens, LOGIT_ELEMENTS // vocab), every position a target); a fused float32 head
       (train/fused_head.py) keeps one buffer of three times the tokens instead: the same bytes,
the peak is
  P_w + P_o + max(A + Z, P_g)    with grad_accum 1: gradients fill in as activations are freed, and are
                                  dropped (set to None) before the next forward pass;
  P_w + P_o + P_g + A + Z        with grad_accum > 1: gradients live through the next micro-batch's forward.
The dtypes are model/precision.py's plan (trainable parameters float32; 16-bit compute under autocast, whose
16-bit copies of float32 linear weights count with A). With sdpa, A also counts what a padded or packed batch
adds: the [B, 1, L, L] mask and K/V repeated for grouped-query attention (see `sdpa_mask_bytes`).
It counts tensors as torch.cuda.max_memory_allocated does; the CUDA context (~0.5 GiB) and allocator
fragmentation come on top. Without a GPU here the plan is made for a current, bf16-capable one.
A vision-language model is built whole (tower, projector, language model), so its parameters, weights,
gradients and optimizer states count every part; A and Z are the language model's, for text tokens (the
tower's activations on the images come on top).
"""

from __future__ import annotations

from dataclasses import dataclass

from tunesmith.config.schema import RunConfig
from tunesmith.model.activations import LayerShape, Rebuilds, activation_bytes, graph_layer_count
from tunesmith.model.methods import ParamCount, apply_method, count_parameters
from tunesmith.model.moe import active_parameters
from tunesmith.train.token_logps import LOGIT_ELEMENTS

GIB = 1024**3
LOGIT_BYTES = 12  # per target position and vocabulary entry, see the module docstring
SMALL_TENSOR_8BIT = 4096  # bitsandbytes keeps float32 optimizer states for tensors smaller than this
BLOCK_8BIT_OPTIMIZER = 256


@dataclass(frozen=True)
class MemoryEstimate:
    params: ParamCount
    weights: float
    gradients: float
    optimizer: float
    activations: float
    logits: float
    peak: float
    tokens: int  # per micro-batch
    summary: str  # the settings the estimate assumed, in words
    active_params: int | None = None  # MoE: the base model's parameters one token passes through

    def report(self) -> str:
        rows = [("weights", self.weights), ("gradients", self.gradients), ("optimizer states", self.optimizer),
                ("activations", self.activations), ("output head (logits)", self.logits),
                ("peak (estimate)", self.peak)]
        lines = [str(self.params)]
        if self.active_params is not None:
            lines.append(f"active params per token (MoE): {self.active_params:,}")
        lines.append(self.summary)
        lines += [f"  {name:<22}{value / GIB:10.2f} GiB" for name, value in rows]
        return "\n".join(lines)


def estimate_memory(config: RunConfig) -> MemoryEstimate:
    """The estimate for `config`; the model's config.json is read, its weights never are."""
    import torch

    from tunesmith.model.precision import DeviceCaps, keep_trainable_in_master, plan_precision

    hf_config = read_model_config(config.model)
    device = DeviceCaps.detect("cuda") if torch.cuda.is_available() else DeviceCaps("cuda", bf16=True)
    plan = plan_precision(config.model.dtype, config.train.precision, config.method.kind, device)
    weight_dtype = plan.frozen_dtype
    compute_bytes = plan.compute_dtype.itemsize
    model = build_meta_model(hf_config, plan.load_dtype)
    active = active_parameters(model, sum(param.numel() for param in model.parameters()))
    quantized = _quantized_weights(model) if config.model.quantization_bit else {}
    # On meta a quantized base has the same parameters as an unquantized one; peft counts them the same.
    method = config.method.model_copy(update={"kind": "lora"}) if config.method.kind == "qlora" else config.method
    model = apply_method(model, method)
    keep_trainable_in_master(model, plan)
    tokens = config.train.batch_size * config.data.max_length
    text_config = hf_config.get_text_config()  # a vision-language model's language model; else the config itself
    weights = weight_bytes(model, quantized, config.model.quantization_bit, config.model.double_quantization)
    gradients = gradient_bytes(model)
    optimizer = optimizer_bytes(model, config.train.optimizer)
    checkpointing = config.train.gradient_checkpointing
    shape = LayerShape.from_config(text_config)
    activations = activation_bytes(model, shape, tokens, compute_bytes, checkpointing, Rebuilds.for_run(config))
    padded = config.train.batch_size > 1 or config.data.packing  # a mask only when rows differ or are packed
    if padded and config.model.attn_implementation in ("auto", "sdpa"):
        layers = 1 if checkpointing else graph_layer_count(model)
        activations += sdpa_mask_bytes(shape, config.train.batch_size, config.data.max_length, compute_bytes, layers)
    if plan.autocast is not None:
        activations += autocast_copy_bytes(model, compute_bytes, quantized)
    chunk = min(tokens, max(1, LOGIT_ELEMENTS // text_config.vocab_size))
    logits = LOGIT_BYTES * chunk * text_config.vocab_size
    peak = weights + optimizer + (
        gradients + activations + logits if config.train.grad_accum > 1 else max(activations + logits, gradients)
    )
    summary = (f"memory for {config.method.kind}, frozen weights {str(weight_dtype).removeprefix('torch.')}, "
               f"trainable {str(plan.master_dtype).removeprefix('torch.')}"
               f"{_quantization_words(config)}, compute {'fp32' if compute_bytes == 4 else '16-bit'}, "
               f"batch {config.train.batch_size} x {config.data.max_length} tokens, gradient checkpointing "
               f"{'on' if checkpointing else 'off'}:")
    return MemoryEstimate(count_parameters(model), weights, gradients, optimizer, activations, logits, peak,
                          tokens, summary, active)


def read_model_config(model_config):
    """The Hugging Face config of the model (config.json, or the metadata of a GGUF file)."""
    from pathlib import Path

    from transformers import AutoConfig

    from tunesmith.model.load import PACKAGE_PREFIX, package_folder

    path = model_config.path
    if path.startswith(PACKAGE_PREFIX):
        path = str(package_folder(path[len(PACKAGE_PREFIX):]))
    kwargs = {"trust_remote_code": model_config.trust_remote_code}
    if model_config.gguf_file or path.endswith(".gguf"):
        folder, name = (path, model_config.gguf_file) if model_config.gguf_file else (str(Path(path).parent), Path(path).name)
        return AutoConfig.from_pretrained(folder, gguf_file=name, **kwargs)
    return AutoConfig.from_pretrained(path, **kwargs)


def build_meta_model(hf_config, dtype):
    """The causal LM (or vision-language model) of `hf_config` on the meta device: every parameter's shape
    and dtype, no storage."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    from tunesmith.model.vision import VISION_PARTS

    auto = AutoModelForImageTextToText if hf_config.model_type in VISION_PARTS else AutoModelForCausalLM
    with torch.device("meta"):
        return auto.from_config(hf_config, dtype=dtype)


def weight_bytes(model, quantized: dict[str, tuple[int, int]], bits: int | None, double_quantization: bool) -> float:
    """Bytes of every parameter, in its dtype, or in bitsandbytes' layout for the `quantized` ones."""
    from tunesmith.model.quantize import quantized_weight_bytes

    total = 0.0
    for name, param in model.named_parameters():
        shape = quantized.get(_base_name(name))
        if shape is not None:
            total += quantized_weight_bytes(shape, bits, double_quantization)
        else:
            total += param.numel() * param.element_size()
    return total


def gradient_bytes(model) -> float:
    return float(sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad))


def optimizer_bytes(model, optimizer: str) -> float:
    """AdamW's two states per trainable element (see the module docstring for the 8-bit layout)."""
    total = 0.0
    for param in (p for p in model.parameters() if p.requires_grad):
        eight_bit = optimizer.endswith("adamw_8bit")  # paged or not, the same states
        if eight_bit and param.numel() >= SMALL_TENSOR_8BIT:
            total += 2 * param.numel() * (1 + 4 / BLOCK_8BIT_OPTIMIZER)
        elif eight_bit:
            total += 2 * param.numel() * 4
        else:
            total += 2 * param.numel() * param.element_size()
    return total


def _quantized_weights(model) -> dict[str, tuple[int, int]]:
    """{parameter name: [out, in]} of the linear weights bitsandbytes quantizes: all but the output head."""
    import torch

    head = model.get_output_embeddings()
    return {f"{name}.weight": tuple(module.weight.shape) for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear) and module is not head}


def _base_name(peft_name: str) -> str:
    """A parameter's name in the bare model: peft adds 'base_model.model.' and '.base_layer'."""
    return peft_name.removeprefix("base_model.model.").replace(".base_layer.", ".")


def sdpa_mask_bytes(shape: LayerShape, batch: int, length: int, compute_bytes: int, layers: int) -> float:
    """What a padded (or packed) batch adds under sdpa, per layer autograd goes through: the [B, 1, L, L] mask
    in the compute dtype (sdpa turns the boolean mask into an additive one and keeps it for backward), and
    K and V repeated from kv_heads to heads (transformers repeats them when a mask is given)."""
    mask = batch * length * length * compute_bytes
    repeated_kv = 2 * batch * length * (shape.heads - shape.kv_heads) * shape.head_dim * compute_bytes
    return float(layers * (mask + repeated_kv))


def autocast_copy_bytes(model, compute_bytes: int, quantized: dict) -> float:
    """16-bit copies autocast makes of float32 linear weights; each is kept for the backward of its matmul."""
    import torch

    total = 0
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if isinstance(module, torch.nn.Linear) and weight is not None and weight.dtype == torch.float32 \
                and _base_name(f"{name}.weight") not in quantized:
            total += weight.numel() * compute_bytes
    return float(total)


def _quantization_words(config: RunConfig) -> str:
    model = config.model
    if not model.quantization_bit:
        return ""
    kind = f"{model.quantization_type}{' double-quantized' if model.double_quantization else ''}"
    return f" (linear layers {model.quantization_bit}-bit{' ' + kind if model.quantization_bit == 4 else ''})"
