"""Translate a LLaMA-Factory training YAML (flat keys) into a tunesmith config (groups).

Simple renames, list keys and LLaMA-Factory's own defaults live in llamafactory.yaml; the keys whose
meaning spans several of our fields (finetuning type, precision, attention, optimizer, ...) are translated
below. Every key that is not translated is reported with the reason, never dropped silently.
"""

from __future__ import annotations

import difflib
import functools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tunesmith.config.paths import get_path, has_path, set_path

ALL_LINEAR = "all-linear"
ATTENTION = {"auto": "auto", "sdpa": "sdpa", "fa2": "flash_attention_2", "disabled": "eager"}
OPTIMIZERS = {"adamw_torch": "adamw", "adamw_torch_fused": "adamw", "adamw_hf": "adamw",
              "adamw_bnb_8bit": "adamw_8bit", "adamw_8bit": "adamw_8bit", "paged_adamw_8bit": "adamw_8bit"}
REPORT_SINKS = {"tensorboard", "wandb", "mlflow"}


@dataclass
class Translation:
    config: dict[str, Any] = field(default_factory=dict)  # the native config, nested by group
    unsupported: dict[str, str] = field(default_factory=dict)  # LLaMA-Factory key -> why it was not applied
    no_effect: dict[str, str] = field(default_factory=dict)  # LLaMA-Factory key -> why it changes nothing here
    applied: dict[str, str] = field(default_factory=dict)  # LLaMA-Factory key -> the native field it set
    mapped: dict[str, str] = field(default_factory=dict)  # LLaMA-Factory key -> what its value was mapped to

    def set(self, dotted: str, value: Any, lf_key: str) -> None:
        """Set a native field, or report `lf_key` unsupported when the schema has no such field."""
        if not field_exists(dotted):
            self.unsupported[lf_key] = f"tunesmith has no {dotted} setting"
            return
        set_path(self.config, dotted, value)
        self.applied[lf_key] = dotted

    def notes(self) -> list[str]:
        lines = [f"not applied: {key} ({why})" for key, why in self.unsupported.items()]
        lines += [f"no effect in tunesmith: {key} ({why})" for key, why in self.no_effect.items()]
        return lines + [f"mapped: {key} {how}" for key, how in self.mapped.items()]


def looks_like_llamafactory(raw: dict[str, Any]) -> bool:
    """A LLaMA-Factory YAML is flat and names model_name_or_path; ours has a `model:` group."""
    return "model_name_or_path" in raw and not isinstance(raw.get("model"), dict)


def translate(raw: dict[str, Any]) -> Translation:
    table = _table()
    result = Translation()
    special = {key: handler for key, handler in SPECIAL.items() if key in raw or key in ALWAYS}
    for key, value in raw.items():
        if key in special or value is None:  # null in LLaMA-Factory means "its default"
            continue
        if key in table["renames"]:
            result.set(table["renames"][key], value, key)
        elif key in table["lists"]:
            result.set(table["lists"][key], _split(value), key)
        elif key in table["no_effect"]:
            result.no_effect[key] = table["no_effect"][key]
        else:
            result.unsupported[key] = _unknown_reason(key, table)
    for handler in dict.fromkeys(special.values()):
        handler(raw, result)
    for dotted, value in table["defaults"].items():
        if not has_path(result.config, dotted):
            result.set(dotted, value, f"(LLaMA-Factory default of {dotted})")
    _drop_other_kinds(result)
    result.config = {group: result.config[group] for group in _group_order() if group in result.config}
    return result


def field_exists(dotted: str) -> bool:
    """Whether the schema has the field (under any kind of a tagged union)."""
    return any(spec.path == dotted for spec in _fields())


def _drop_other_kinds(result: Translation) -> None:
    """LLaMA-Factory keeps every setting whatever the finetuning type or stage; ours exist only under their own
    kind, so a key set for another kind (lora_rank with finetuning_type full) has no effect and is said so."""
    chosen = {spec.group: get_path(result.config, spec.path, spec.default) for spec in _fields()
              if spec.name == "kind" and "." not in spec.group}
    for spec in _fields():
        if not spec.union or chosen[spec.union] in spec.kinds or not has_path(result.config, spec.path):
            continue
        del get_path(result.config, spec.group)[spec.name]
        for lf_key, target in list(result.applied.items()):
            if target == spec.path:
                del result.applied[lf_key]
                result.no_effect[lf_key] = f"{spec.path} is a setting of {spec.union}.kind {', '.join(spec.kinds)}"


@functools.cache
def _fields() -> list:
    from tunesmith.config.fields import schema_fields
    from tunesmith.config.schema import RunConfig

    return schema_fields(RunConfig)


def _method(raw: dict, result: Translation) -> None:
    method = raw.get("quantization_method", "bnb")
    if method != "bnb":
        result.unsupported["quantization_method"] = f"'{method}': tunesmith quantizes with bitsandbytes (bnb) only"
    kind = raw.get("finetuning_type", "lora")
    if kind not in ("lora", "full", "freeze"):
        result.unsupported["finetuning_type"] = f"'{kind}' is not a tunesmith method; use lora, full or freeze"
        return
    if kind == "lora" and raw.get("quantization_bit") is not None:
        kind = "qlora"
    result.set("method.kind", kind, "finetuning_type")
    if kind not in ("lora", "qlora"):
        return
    if raw.get("lora_alpha") is None:
        result.set("method.alpha", 2 * raw.get("lora_rank", 8), "lora_alpha")  # LLaMA-Factory: 2 x rank
    target = raw.get("lora_target")
    result.set("method.targets", ALL_LINEAR if target in ("all", None) else _split(target), "lora_target")


def _freeze(raw: dict, result: Translation) -> None:
    layers = raw.get("freeze_trainable_layers", 2)
    if layers < 0:
        result.unsupported["freeze_trainable_layers"] = "training the first layers (a negative count) is not supported"
    else:
        result.set("method.layers", layers, "freeze_trainable_layers")
    modules = raw.get("freeze_trainable_modules", "all")
    if modules != "all":
        result.unsupported["freeze_trainable_modules"] = (
            f"'{modules}': tunesmith trains whole layers; name extra modules in method.modules"
        )


def _precision(raw: dict, result: Translation) -> None:
    """LLaMA-Factory loads the model in the compute dtype: bf16 / fp16 when asked, else float32."""
    if raw.get("pure_bf16") or raw.get("bf16"):
        dtype, precision = "bfloat16", "bf16"
    elif raw.get("fp16"):
        dtype, precision = "float16", "fp16"
    else:
        dtype, precision = "float32", "fp32"
    result.set("model.dtype", dtype, "bf16")
    result.set("train.precision", precision, "bf16")


def _gradient_checkpointing(raw: dict, result: Translation) -> None:
    """LLaMA-Factory checkpoints gradients unless told not to."""
    result.set("train.gradient_checkpointing", not raw.get("disable_gradient_checkpointing", False),
               "disable_gradient_checkpointing")


def _attention(raw: dict, result: Translation) -> None:
    value = raw["flash_attn"]
    if value in ATTENTION:
        result.set("model.attn_implementation", ATTENTION[value], "flash_attn")
    else:
        result.unsupported["flash_attn"] = f"'{value}' is not one of {', '.join(ATTENTION)}"


def _optimizer(raw: dict, result: Translation) -> None:
    if "optim" in raw:
        if raw["optim"] in OPTIMIZERS:
            result.set("train.optimizer", OPTIMIZERS[raw["optim"]], "optim")
        else:
            result.unsupported["optim"] = f"'{raw['optim']}': tunesmith has {', '.join(sorted(set(OPTIMIZERS.values())))}"
    if "adam_beta1" in raw or "adam_beta2" in raw:
        betas = [raw.get("adam_beta1", 0.9), raw.get("adam_beta2", 0.999)]
        result.set("train.adam_betas", betas, "adam_beta1")


def _max_steps(raw: dict, result: Translation) -> None:
    if raw["max_steps"] is not None and raw["max_steps"] > 0:  # the Trainer's -1 means "use epochs"
        result.set("train.max_steps", raw["max_steps"], "max_steps")


def _report_to(raw: dict, result: Translation) -> None:
    sinks = _split(raw["report_to"])
    other = [sink for sink in sinks if sink not in REPORT_SINKS | {"none"}]
    if other:
        result.unsupported["report_to"] = f"{', '.join(other)}: tunesmith reports to {', '.join(sorted(REPORT_SINKS))}"
    result.set("train.report_to", [sink for sink in sinks if sink in REPORT_SINKS], "report_to")


def _timeout(raw: dict, result: Translation) -> None:
    result.set("dist.timeout_minutes", max(1, math.ceil(raw["ddp_timeout"] / 60)), "ddp_timeout")


def _template(raw: dict, result: Translation) -> None:
    """A LLaMA-Factory template name becomes the built-in it maps to; one meaning the tokenizer's own template is
    kept, so that loading checks the tokenizer's template is of that family."""
    from tunesmith.data.template_names import choose_template
    from tunesmith.errors import TunesmithError

    name = raw["template"]
    if name is None:
        return
    try:
        choice = choose_template(name)
    except TunesmithError as err:
        result.unsupported["template"] = str(err)
        return
    result.set("model.template", choice.builtin or name, "template")
    result.mapped["template"] = f"'{name}' -> {choice.describe()}"


def _deepspeed(raw: dict, result: Translation) -> None:
    result.set("dist.engine", "deepspeed", "deepspeed")
    result.set("dist.deepspeed.config_file", raw["deepspeed"], "deepspeed")


SPECIAL = {
    "finetuning_type": _method, "lora_target": _method, "quantization_method": _method,
    "freeze_trainable_layers": _freeze, "freeze_trainable_modules": _freeze,
    "bf16": _precision, "fp16": _precision, "pure_bf16": _precision,
    "disable_gradient_checkpointing": _gradient_checkpointing,
    "flash_attn": _attention, "optim": _optimizer, "adam_beta1": _optimizer, "adam_beta2": _optimizer,
    "max_steps": _max_steps, "report_to": _report_to, "deepspeed": _deepspeed, "ddp_timeout": _timeout,
    "template": _template,
}
# Translated even when absent, because LLaMA-Factory's default differs from ours.
ALWAYS = {"finetuning_type", "bf16", "disable_gradient_checkpointing"}


def _split(value: Any) -> list:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return list(value)


def _unknown_reason(key: str, table: dict) -> str:
    known = [*table["renames"], *table["lists"], *table["no_effect"], *SPECIAL]
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.8)
    return f"did you mean '{close[0]}'?" if close else "tunesmith has no equivalent"


def _group_order() -> list[str]:
    from tunesmith.config.schema import RunConfig

    return list(RunConfig.model_fields)


def foreign_key_target(key: str) -> str:
    """The tunesmith field a LLaMA-Factory key becomes ('' when it is not a plain rename)."""
    return _table()["renames"].get(key, "")


@functools.cache
def _table() -> dict[str, dict]:
    return yaml.safe_load((Path(__file__).parent / "llamafactory.yaml").read_text(encoding="utf-8"))
