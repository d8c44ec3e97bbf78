"""The vLLM backend (GPU, `pip install tunesmith[vllm]`): the same engine interface as HfEngine.

Prompts are rendered by our `ChatTemplate` and handed to vLLM as token ids, so vLLM serves exactly the text
the model was trained on. An adapter is applied as a LoRA request, not merged. vLLM schedules and batches
on its own; pieces of text arrive once per request when its batch finishes, and a cancelled request is
only dropped if it has not started. Prompts go to vLLM as text token ids only: images are read by the hf
backend alone, whatever the model.
"""

from __future__ import annotations

import json
from pathlib import Path

from tunesmith.data.template import ChatTemplate
from tunesmith.errors import TunesmithError
from tunesmith.infer.engine import Engine
from tunesmith.infer.settings import DecodeRequest, DecodeResult, GenerationSettings

IMAGES_NEED_HF = ("image input is served by the hf backend only (the vllm backend sends vLLM text prompts); "
                  "use --backend hf for images")


def vllm_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


def require_vllm(what: str, instead: str) -> None:
    """A clear error when vllm is not installed: `what` needs it, `instead` is the way without it."""
    if not vllm_available():
        raise TunesmithError(f"{what} needs vllm on a GPU machine: pip install 'tunesmith[vllm]', or {instead}")


class VllmEngine(Engine):
    backend = "vllm"

    def __init__(self, model_dir: str, template: ChatTemplate, adapter_dir: Path | None = None,
                 trust_remote_code: bool = False):
        require_vllm("the vllm backend", "use --backend hf")
        from vllm import LLM
        from vllm.lora.request import LoRARequest

        lora_rank = _adapter_rank(adapter_dir) if adapter_dir else None
        extra = {"enable_lora": True, "max_lora_rank": max(8, lora_rank)} if lora_rank else {}
        self.llm = LLM(model=model_dir, trust_remote_code=trust_remote_code, **extra)
        self.lora = LoRARequest("adapter", 1, str(adapter_dir)) if adapter_dir else None
        super().__init__(template, self.llm.llm_engine.model_config.max_model_len)

    def prompt_ids(self, messages: list[dict], tools: list | None = None, images: list[str] | None = None
                   ) -> list[int]:
        if images:
            raise TunesmithError(IMAGES_NEED_HF)
        return super().prompt_ids(messages, tools)

    def run_batch(self, requests: list[DecodeRequest], admit=None, max_rows: int = 0) -> list[DecodeResult]:
        # `admit` is not used: requests join at the next call, as vLLM's own scheduler works per call.
        live = [r for r in requests if not r.cancelled.is_set()]
        for request in live:
            self.check_fits(len(request.prompt_ids))
        prompts = [{"prompt_token_ids": r.prompt_ids} for r in live]
        params = [self._sampling_params(r) for r in live]
        outputs = self.llm.generate(prompts, params, lora_request=self.lora, use_tqdm=False) if live else []
        finished = {id(r): out.outputs[0] for r, out in zip(live, outputs)}
        results = []
        for request in requests:
            output = finished.get(id(request))
            if output is None:
                results.append(DecodeResult("", "cancelled", len(request.prompt_ids), 0))
                continue
            if output.text:
                request.on_text(output.text)
            reason = "length" if output.finish_reason == "length" else "stop"
            results.append(DecodeResult(output.text, reason, len(request.prompt_ids), len(output.token_ids)))
        return results

    def _sampling_params(self, request: DecodeRequest):
        room = self.max_context - len(request.prompt_ids)
        return sampling_params(request.settings, min(request.settings.max_new_tokens, room),
                               self.template.stop_token_ids())


def sampling_params(settings: GenerationSettings, max_tokens: int, stop_token_ids: list[int]):
    """vLLM's SamplingParams for our settings: one request, one completion, its own seed."""
    from vllm import SamplingParams

    return SamplingParams(
        n=1,
        max_tokens=max(1, max_tokens),
        temperature=settings.temperature,
        top_p=settings.top_p,
        top_k=settings.top_k or -1,
        repetition_penalty=settings.repetition_penalty,
        presence_penalty=settings.presence_penalty,
        frequency_penalty=settings.frequency_penalty,
        stop=list(settings.stop) or None,
        stop_token_ids=list(stop_token_ids),
        seed=settings.seed,
        skip_special_tokens=True,
    )


def _adapter_rank(adapter_dir: Path) -> int:
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    return int(config.get("r", 8))
