"""GRPO rollouts from vLLM (stage.rollout_backend: vllm), colocated: the engine lives in the training process, on
its GPU, and takes the policy's weights before each rollout. Same interface as grpo_rollout.HfRollout.

Each completion is its own vLLM request with its own SamplingParams seed, from the same (seed, step, prompt index,
generation index) as the hf backend's streams, so resumed runs and any process count draw the same completions
(vLLM's kernels differ from transformers', so the two backends do not draw the same text).
"""

from __future__ import annotations

from tunesmith.infer.settings import DecodeResult, GenerationSettings
from tunesmith.infer.vllm_engine import require_vllm, sampling_params
from tunesmith.model.served_weights import check_servable, served_weights
from tunesmith.train.stages.grpo_rollout import generation_seed


class VllmRollout:
    def __init__(self, policy, model_dir: str, max_model_len: int, gpu_memory: float, seed: int, processes: int):
        require_vllm("stage.rollout_backend vllm", "set stage.rollout_backend hf")
        check_servable(policy)
        from vllm import LLM

        # Under torchrun every process keeps its own engine beside its policy: vLLM's external launcher mode.
        launcher = {"distributed_executor_backend": "external_launcher"} if processes > 1 else {}
        self.llm = LLM(model=model_dir, gpu_memory_utilization=gpu_memory, max_model_len=max_model_len, seed=seed,
                       **launcher)

    def sync(self, policy) -> None:
        """Load the policy's current weights (adapters folded in) into vLLM's copy of the model, one tensor at a
        time so no second whole copy is made, and drop vLLM's cached prompt states, computed with the old ones."""
        model = self.llm.llm_engine.model_executor.driver_worker.model_runner.model
        for name, tensor in served_weights(policy):
            model.load_weights([(name, tensor)])
        self.llm.reset_prefix_cache()

    def sample(self, policy, tokenizer, prompts: list[list[int]], indexes: list[int], sampling, group: int,
               seed: int, step: int | str, stop_ids: list[int]) -> list[DecodeResult]:
        """DecodeResults, `group` per prompt, prompt-major (see grpo_rollout.sample_completions)."""
        settings = sampling.model_dump(exclude={"seed"})
        requests, params = [], []
        for ids, index in zip(prompts, indexes):
            for generation in range(group):
                drawn = GenerationSettings(**settings, seed=generation_seed(seed, step, index, generation))
                requests.append({"prompt_token_ids": list(ids)})
                params.append(sampling_params(drawn, drawn.max_new_tokens, stop_ids))
        outputs = self.llm.generate(requests, sampling_params=params, use_tqdm=False)
        return [_result(request["prompt_token_ids"], output.outputs[0]) for request, output in zip(requests, outputs)]


def _result(prompt: list[int], completion) -> DecodeResult:
    # vLLM keeps the stop token that ended a completion in its token_ids, as the hf decoder does.
    reason = "length" if completion.finish_reason == "length" else "stop"
    ids = list(completion.token_ids)
    return DecodeResult(completion.text, reason, len(prompt), len(ids), ids)
