"""Build an inference engine from a run folder, a model path, or a base model plus an adapter."""

from __future__ import annotations

from pathlib import Path

from tunesmith.config.schema import ModelConfig
from tunesmith.errors import TunesmithError


def load_engine(
    model: str | None = None,
    adapter: str | None = None,
    run: str | None = None,
    template: str | None = None,
    gguf_file: str | None = None,
    trust_remote_code: bool = False,
    backend: str = "hf",
):
    """An engine for `run` (what that run trained, with its template) or for `model` [+ `adapter`].

    backend: "hf" (transformers, CPU or GPU) or "vllm" (GPU, where vllm is installed)."""
    from tunesmith.data.template import ChatTemplate
    from tunesmith.infer.engine import HfEngine
    from tunesmith.model.load import load_model, load_tokenizer, resolve_source, tokenizer_from
    from tunesmith.run_folder import ADAPTER_CONFIG, is_adapter

    if run:
        base, adapter_dir, tokenizer_dir = _from_run(Path(run), trust_remote_code)
        template = template or "auto"  # the run folder's tokenizer carries the template it trained with
    elif model:
        base = ModelConfig(path=model, gguf_file=gguf_file, trust_remote_code=trust_remote_code)
        adapter_dir = Path(adapter) if adapter else None
        tokenizer_dir = adapter_dir if adapter_dir and (adapter_dir / "tokenizer_config.json").is_file() else None
        template = template or base.template
    else:
        raise TunesmithError("say what to load: --run RUN_DIR, or --model PATH [--adapter PATH]")
    if adapter_dir is not None and not is_adapter(adapter_dir):
        raise TunesmithError(f"{adapter_dir} holds no adapter ({ADAPTER_CONFIG}); check --adapter")
    source = resolve_source(base)
    tokenizer = load_tokenizer(base, source) if tokenizer_dir is None else tokenizer_from(tokenizer_dir)
    if backend == "vllm":
        from tunesmith.infer.vllm_engine import VllmEngine

        return VllmEngine(source.location, ChatTemplate(tokenizer, template), adapter_dir, base.trust_remote_code)
    if backend != "hf":
        raise TunesmithError(f"unknown backend '{backend}'; use hf or vllm")
    # Straight onto the GPU as the weights load, not through CPU memory first.
    network = load_model(base, "cuda" if _cuda() else "cpu", source, device="cuda" if _cuda() else None)
    if adapter_dir is not None:
        from peft import PeftModel

        from tunesmith.model.peft_warnings import quiet_peft
        from tunesmith.model.quantize import is_quantized

        with quiet_peft():
            network = PeftModel.from_pretrained(network, str(adapter_dir))
        if not is_quantized(network.base_model.model):
            # Folded into the weights, the adapter costs nothing per token; a quantized base keeps it apart.
            network = network.merge_and_unload()
    from tunesmith.data.vision_processor import load_media

    return HfEngine(network, ChatTemplate(tokenizer, template, load_media(source.location, tokenizer)))


def _from_run(run_dir: Path, trust_remote_code: bool) -> tuple[ModelConfig, Path | None, Path]:
    """The base model config, adapter folder (None for a full model) and tokenizer folder of a run."""
    from tunesmith.run_folder import has_weights, is_adapter, read_run_config

    config = read_run_config(run_dir, trust_remote_code=trust_remote_code)
    if is_adapter(run_dir):
        return config.model, run_dir, run_dir
    if has_weights(run_dir):
        return config.model.model_copy(update={"path": str(run_dir), "gguf_file": None}), None, run_dir
    raise TunesmithError(f"{run_dir} holds no trained weights yet; did the run finish?")


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()
