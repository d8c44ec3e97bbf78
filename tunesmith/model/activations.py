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
                                    is on or the adapter's dtype differs from the input's (+ in for the
                                    dropout mask);   DoRA: + 2 E out  (base and LoRA outputs it rescales)

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


def activation_bytes(model, shape: LayerShape, tokens: int, compute_bytes: int, checkpointing: bool) -> float:
    """Bytes saved for backward over `tokens` tokens by the (method-prepared, meta) `model`."""
    from tunesmith.model.methods import decoder_layers

    layers = list(decoder_layers(model))
    embeddings_train = _trains(model.get_input_embeddings())
    graph = layers[len(layers) - graph_layer_count(model):]
    residual_bytes = layers[0].input_layernorm.weight.element_size()
    per_layer = [
        layer_bytes(layer, shape, compute_bytes, residual_bytes, input_needs_grad=index > 0 or embeddings_train)
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


def layer_bytes(layer, shape: LayerShape, e: int, r: int, input_needs_grad: bool) -> float:
    """Bytes per token that one decoder layer keeps for backward (the table in the module docstring)."""
    from tunesmith.model.gated_mlp import is_gated_mlp

    h, kv, h_q = shape.hidden, shape.kv_heads * shape.head_dim, shape.heads * shape.head_dim
    roles = _linear_roles(layer)
    total = _norm_bytes(layer.input_layernorm, h, r, input_needs_grad)
    total += _norm_bytes(layer.post_attention_layernorm, h, r, input_needs_grad=True)
    total += e * (2 * h_q + 2 * kv) + 4 * shape.heads + (2 + (not is_gated_mlp(layer.mlp))) * e * shape.intermediate
    total += r * h * _keeps_input(roles, ATTENTION_INPUTS) + r * h * _keeps_input(roles, MLP_INPUTS)
    total += e * shape.intermediate * _keeps_input(roles, MLP_OUTPUT)
    for module in roles.values():
        total += _lora_bytes(module, e, r)
    return total


def _norm_bytes(norm, hidden: int, r: int, input_needs_grad: bool) -> int:
    return (4 * hidden + 4) * input_needs_grad + r * hidden * _trains(norm)


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


def _keeps_input(roles: dict, names: set[str]) -> bool:
    from peft.tuners.lora import LoraLayer

    return any(isinstance(module, LoraLayer) or _trains(module) for role, module in roles.items() if role in names)


def _lora_bytes(module, e: int, r: int) -> float:
    import torch
    from peft.tuners.lora import LoraLayer

    if not isinstance(module, LoraLayer):
        return 0.0
    adapter = module.active_adapters[0]
    lora_a = module.lora_A[adapter]
    dropout = not isinstance(module.lora_dropout[adapter], torch.nn.Identity)
    copies_input = dropout or lora_a.weight.element_size() != r
    total = e * lora_a.out_features + (e * lora_a.in_features) * copies_input + lora_a.in_features * dropout
    if module.use_dora.get(adapter, False):
        total += 2 * e * module.lora_B[adapter].out_features
    return total


def _trains(module) -> bool:
    return module is not None and any(p.requires_grad for p in module.parameters())
