"""Activation memory of a Llama-style decoder (Llama, Mistral, Qwen, Gemma, ...) in training, per token.

What autograd keeps for the backward pass, counted tensor by tensor for one decoder layer, in bytes per
token, with h = hidden size, h_q = heads * head_dim, kv = kv_heads * head_dim, i = intermediate size,
a = heads, R = bytes of the weights' dtype (the residual stream), E = bytes of the compute dtype:

  each RMSNorm           4h + 4     float32 copy of its input and 1/rms, when its input needs a gradient
                       + R h        the normalised input, when the norm's weight trains
  q/k/v input            R h        when one of q/k/v trains or carries LoRA (linears keep their input)
  attention              E (2 h_q + 2 kv) + 4a   rotated q and k, v, the output, float32 log-sum-exp
  gated MLP              2 E i      gate, up (model/gated_mlp.py recomputes act(gate) in backward; + E i for
                                    an MLP it leaves as it is);   + E i  the down input, when down trains / LoRA
                       + R h        gate/up input, when one of them trains or carries LoRA
  each LoRA module       E r        the down-projection's output;   + E in  a copy of the input when dropout
                                    is on or the adapter's dtype differs from the input's (the linears above
                                    then keep no input of theirs for it; + R in for dropout's noise on a CPU,
                                    when the input needs a gradient);
                                    DoRA: + 2 E out  (base and LoRA outputs it rescales)

model/recompute.py rebuilds the down input of a gated MLP from gate and up (0 instead of E i) and, where norm
weights are whole (not ZeRO-3 / FSDP), the q/k/v and gate/up inputs from their norm's input: that costs nothing
where the norm keeps its input itself (a float32 input that needs a gradient), else R h as before; a trained
norm's float32 normalised input is rebuilt from the same input (0). Where autocast casts a linear's input
(E != R), each such linear keeps its own E h copy instead, which nothing rebuilds.

Layers before the first one with anything to train keep nothing (no gradient flows there). With gradient
checkpointing each layer keeps only its input (R h) and one layer's activations are rebuilt at a time.
Outside the layers: the final norm (as above) and, when the output head trains, its input (R h).
"""

from __future__ import annotations

from dataclasses import dataclass

ATTENTION_INPUTS = {"q_proj", "k_proj", "v_proj", "qkv_proj"}
MLP_INPUTS = {"gate_proj", "up_proj", "gate_up_proj"}
MLP_OUTPUT = {"down_proj"}


@dataclass(frozen=True)
class Rebuilds:
    """Which kept tensors model/recompute.py computes again in the backward pass instead."""

    mlp_product: bool  # act(gate) * up: whenever the layers run its hook (not under torch.compile)
    norm_outputs: bool  # also needs the norms' weights whole (not ZeRO-3 / FSDP)

    @classmethod
    def for_run(cls, config) -> "Rebuilds":
        dist = config.dist
        shards = dist.engine == "fsdp" or (dist.engine == "deepspeed" and dist.deepspeed.stage == 3)
        hooked = not config.train.compile
        return cls(mlp_product=hooked, norm_outputs=hooked and not shards)


@dataclass(frozen=True)
class LayerShape:
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int

    @classmethod
    def from_config(cls, hf_config) -> "LayerShape":
        heads = hf_config.num_attention_heads
        head_dim = getattr(hf_config, "head_dim", None) or hf_config.hidden_size // heads
        kv_heads = getattr(hf_config, "num_key_value_heads", None) or heads
        return cls(hf_config.hidden_size, hf_config.intermediate_size, heads, kv_heads, head_dim)


def activation_bytes(model, shape: LayerShape, tokens: int, compute_bytes: int, checkpointing: bool,
                     rebuilds: Rebuilds) -> float:
    """Bytes saved for backward over `tokens` tokens by the (method-prepared, meta) `model`."""
    from tunesmith.model.methods import decoder_layers

    layers = list(decoder_layers(model))
    embeddings_train = _trains(model.get_input_embeddings())
    graph = layers[len(layers) - graph_layer_count(model):]
    residual_bytes = layers[0].input_layernorm.weight.element_size()
    if checkpointing:  # a layer recomputed by checkpointing runs under its saved-tensor hook: nothing is rebuilt
        rebuilds = Rebuilds(mlp_product=False, norm_outputs=False)
    per_layer = [
        layer_bytes(layer, shape, compute_bytes, residual_bytes, input_needs_grad=index > 0 or embeddings_train,
                    rebuilds=rebuilds)
        for index, layer in enumerate(graph)
    ]
    if checkpointing and per_layer:
        in_layers = len(per_layer) * residual_bytes * shape.hidden + max(per_layer)
    else:
        in_layers = sum(per_layer)
    decoder = model.get_decoder()
    outside = _norm_bytes(decoder.norm, shape.hidden, residual_bytes, input_needs_grad=bool(graph))
    if _trains(model.get_output_embeddings()):
        outside += residual_bytes * shape.hidden
    if embeddings_train:
        outside += 8  # the int64 token ids the embedding's backward indexes with
    return float(tokens * (in_layers + outside))


def graph_layer_count(model) -> int:
    """Decoder layers autograd goes through: from the first one with anything to train (all, when the
    embeddings train) to the last."""
    from tunesmith.model.methods import decoder_layers

    layers = list(decoder_layers(model))
    if _trains(model.get_input_embeddings()):
        return len(layers)
    first = next((index for index, layer in enumerate(layers) if _trains(layer)), None)
    return 0 if first is None else len(layers) - first


def layer_bytes(layer, shape: LayerShape, e: int, r: int, input_needs_grad: bool, rebuilds: Rebuilds) -> float:
    """Bytes per token that one decoder layer keeps for backward (the table in the module docstring)."""
    from tunesmith.model.gated_mlp import is_gated_mlp

    h, kv, h_q = shape.hidden, shape.kv_heads * shape.head_dim, shape.heads * shape.head_dim
    roles = _linear_roles(layer)
    gated = is_gated_mlp(layer.mlp)
    total = _norm_bytes(layer.input_layernorm, h, r, input_needs_grad, rebuilds.norm_outputs)
    total += _norm_bytes(layer.post_attention_layernorm, h, r, input_needs_grad=True, rebuilt=rebuilds.norm_outputs)
    total += e * (2 * h_q + 2 * kv) + 4 * shape.heads + (2 + (not gated)) * e * shape.intermediate
    # A norm's output rebuilt from its input costs nothing where the norm keeps that input itself (float32).
    total += _input_bytes(roles, ATTENTION_INPUTS, h, e, r,
                          rebuilt_free=rebuilds.norm_outputs and input_needs_grad and r == 4)
    total += _input_bytes(roles, MLP_INPUTS, h, e, r, rebuilt_free=rebuilds.norm_outputs and r == 4)
    # act(gate) * up comes out in the compute dtype: no autocast copy
    total += _input_bytes(roles, MLP_OUTPUT, shape.intermediate, e, e, rebuilt_free=rebuilds.mlp_product and gated)
    for role, module in roles.items():  # with the bytes of the input each reads, and whether that needs a gradient
        total += _lora_bytes(module, e, e if role in MLP_OUTPUT else r, input_needs_grad or role not in ATTENTION_INPUTS)
    return total


def _norm_bytes(norm, hidden: int, r: int, input_needs_grad: bool, rebuilt: bool = False) -> int:
    # The normalised input, for a trained weight's gradient, is rebuilt from the float32 input, which the norm keeps
    # (or, when that needs no gradient, its output's recipe: counted with the linears that read it).
    normalised = 0 if rebuilt and r == 4 else r * hidden
    return (4 * hidden + 4) * input_needs_grad + normalised * _trains(norm)


def _linear_roles(layer) -> dict:
    """{role name (q_proj, ...): module} for the layer's linears; a LoRA-wrapped one stands as its wrapper."""
    import torch
    from peft.tuners.lora import LoraLayer

    roles = {}
    for name, module in layer.named_modules():
        role = name.rsplit(".", 1)[-1]
        if isinstance(module, LoraLayer) or (isinstance(module, torch.nn.Linear) and role not in roles
                                             and "lora_" not in name and role != "base_layer"):
            roles[role] = module
    return roles


def _input_bytes(roles: dict, names: set[str], width: int, e: int, r: int, rebuilt_free: bool) -> int:
    """What the linears `names` keep of the input they share (of `width` features, r bytes each): the input
    itself, once, unless it is rebuilt for free; or, where autocast casts it (e != r), each its own copy."""
    from peft.tuners.lora import LoraLayer

    itself, copies = False, 0
    for role, module in roles.items():
        if role not in names or not (isinstance(module, LoraLayer) or _trains(module)):
            continue
        if isinstance(module, LoraLayer) and _lora_copies_input(module, r):
            continue  # it keeps its own copy (_lora_bytes)
        if e != r:
            copies += 1
        else:
            itself = True
    return copies * e * width + r * width * (itself and not rebuilt_free)


def _lora_copies_input(module, r: int) -> bool:
    """Whether a LoRA module feeds its adapter a copy of its input: dropout's output, or a cast to its dtype."""
    import torch

    adapter = module.active_adapters[0]
    dropout = not isinstance(module.lora_dropout[adapter], torch.nn.Identity)
    return dropout or module.lora_A[adapter].weight.element_size() != r


def _lora_bytes(module, e: int, r: int, input_needs_grad: bool) -> float:
    """Bytes per token a LoRA module keeps (r: bytes of its input)."""
    import torch
    from peft.tuners.lora import LoraLayer

    if not isinstance(module, LoraLayer):
        return 0.0
    adapter = module.active_adapters[0]
    lora_a = module.lora_A[adapter]
    dropout = not isinstance(module.lora_dropout[adapter], torch.nn.Identity)
    # Dropout on a CPU keeps its noise in the input's dtype, for the input's gradient (CUDA's fused kernel keeps
    # a 1-byte mask: counted high there).
    total = (e * lora_a.out_features + (e * lora_a.in_features) * _lora_copies_input(module, r)
             + r * lora_a.in_features * (dropout and input_needs_grad))
    if module.use_dora.get(adapter, False):
        total += 2 * e * module.lora_B[adapter].out_features
    return total


def _trains(module) -> bool:
    return module is not None and any(p.requires_grad for p in module.parameters())
