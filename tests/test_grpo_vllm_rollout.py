"""GRPO's vLLM rollout backend, without vLLM (it needs a GPU): a stand-in `vllm` module in sys.modules accepts only
the names of vLLM's own API (LLM(model=..., gpu_memory_utilization=..., max_model_len=..., seed=...),
LLM.generate(prompts, sampling_params=[...], use_tqdm=...), SamplingParams' fields,
llm_engine.model_executor.driver_worker.model_runner.model.load_weights, reset_prefix_cache) and samples with
the weights it was given. Asking for the backend where vllm is missing names the extra to install."""

from __future__ import annotations

import copy
import importlib.machinery
import math
import sys
import types
from types import SimpleNamespace

import pytest
import torch

from conftest import tiny_run_config
from test_stages_grpo import fail_if_loaded, run, write_gsm8k
from tunesmith.errors import TunesmithError
from tunesmith.train.metrics import read_metrics


class FakeSamplingParams:
    """vLLM's SamplingParams fields that tunesmith sets; any other keyword is a TypeError, as a typo would be."""

    def __init__(self, *, n=1, temperature=1.0, top_p=1.0, top_k=0, max_tokens=16, stop=None, stop_token_ids=None,
                 seed=None, skip_special_tokens=True, repetition_penalty=1.0, presence_penalty=0.0,
                 frequency_penalty=0.0):
        assert n == 1 and seed is not None  # one completion per request, each with its own stream
        self.temperature, self.top_p, self.top_k, self.max_tokens = temperature, top_p, top_k, max_tokens
        self.stop, self.stop_token_ids, self.seed = stop, stop_token_ids, seed


class FakeModel:
    """vLLM's model: load_weights takes (checkpoint name, tensor) pairs; a name it does not know is an error."""

    def __init__(self, network, log):
        self.network, self.log = network, log
        self.params = dict(network.named_parameters())

    def load_weights(self, weights):
        for name, tensor in weights:
            self.params[name].data.copy_(tensor)  # KeyError: a name vLLM's checkpoint loader would not know
            self.log.append(("load", name))


class FakeLLM:
    created: list = []

    def __init__(self, model, *, gpu_memory_utilization, max_model_len, seed, **others):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        assert set(others) <= {"distributed_executor_backend"} and 0 < gpu_memory_utilization < 1
        self.log, self.max_model_len = [], max_model_len
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        network = AutoModelForCausalLM.from_pretrained(model).eval()
        runner = SimpleNamespace(model=FakeModel(network, self.log))
        self.llm_engine = SimpleNamespace(model_executor=SimpleNamespace(driver_worker=SimpleNamespace(
            model_runner=runner)))
        FakeLLM.created.append(self)

    def reset_prefix_cache(self):
        self.log.append(("reset", None))

    def generate(self, prompts, /, sampling_params=None, *, use_tqdm=True):
        """Each request sampled from its own seed with the loaded weights (by tunesmith's decoder: a stand-in)."""
        from tunesmith.infer.decoding import decode_batch
        from tunesmith.infer.settings import DecodeRequest, GenerationSettings

        assert len(sampling_params) == len(prompts) and use_tqdm is False
        self.log.append(("generate", len(prompts)))
        requests = []
        for prompt, params in zip(prompts, sampling_params):
            assert set(prompt) == {"prompt_token_ids"}
            assert len(prompt["prompt_token_ids"]) + params.max_tokens <= self.max_model_len
            requests.append(DecodeRequest(prompt["prompt_token_ids"], GenerationSettings(
                max_new_tokens=params.max_tokens, temperature=params.temperature, top_p=params.top_p,
                top_k=max(0, params.top_k), seed=params.seed, stop=params.stop or [])))
        results = decode_batch(self.llm_engine.model_executor.driver_worker.model_runner.model.network,
                               self.tokenizer, requests, sampling_params[0].stop_token_ids, None)
        return [SimpleNamespace(prompt_token_ids=p["prompt_token_ids"], outputs=[SimpleNamespace(
            text=r.text, token_ids=tuple(r.token_ids), finish_reason="length" if r.finish_reason == "length"
            else "stop")]) for p, r in zip(prompts, results)]


@pytest.fixture
def fake_vllm(monkeypatch):
    module = types.ModuleType("vllm")
    module.__spec__ = importlib.machinery.ModuleSpec("vllm", None)  # importlib.util.find_spec finds it
    module.LLM, module.SamplingParams = FakeLLM, FakeSamplingParams
    monkeypatch.setitem(sys.modules, "vllm", module)
    FakeLLM.created = []
    return FakeLLM


def grpo_run(model_dir, data_dir, out_dir, backend):
    """A reward that tells the tiny model's random completions apart: how many different characters they hold."""
    (data_dir / "variety.py").write_text("def variety(prompts, completions, **columns):\n"
                                         "    return [len(set(text)) / 10 for text in completions]\n")
    stage = {"kind": "grpo", "num_generations": 2, "sampling": {"max_new_tokens": 6},
             "reward_funcs": [f"{data_dir}/variety.py:variety"], "rollout_backend": backend}
    return tiny_run_config(model_dir, data_dir, out_dir, stage=stage,
                           data={"datasets": ["gsm8k"], "cache": False, "max_length": 96},
                           train={"max_steps": 3, "batch_size": 4, "lr": 5e-2})


def test_vllm_rollouts_sync_weights_before_each_rollout_and_match_the_hf_backend(tiny_model_dir, tmp_path,
                                                                                fake_vllm):
    """The stand-in samples the streams the hf backend draws, so with the policy's weights synced before every
    rollout both runs log the same rewards and losses; a stale copy would sample other completions."""
    data = write_gsm8k(tmp_path / "data")
    logged = {}
    for backend in ("hf", "vllm"):
        logged[backend] = [{k: v for k, v in record.items() if k != "tokens_per_s"}
                           for record in read_metrics(run(grpo_run(tiny_model_dir, data, tmp_path / backend,
                                                                   backend)))]
    assert [r["step"] for r in logged["vllm"]] == [1, 2, 3]
    assert any(r["reward_std"] > 0 for r in logged["hf"])  # the loss has something to push on
    for hf, vllm in zip(logged["hf"], logged["vllm"]):
        assert hf.keys() == vllm.keys()
        for key in hf:
            assert math.isclose(hf[key], vllm[key], rel_tol=1e-5, abs_tol=1e-7), (hf["step"], key)
    (engine,) = fake_vllm.created
    names = {name for kind, name in engine.log if kind == "load"}
    assert names == set(engine.llm_engine.model_executor.driver_worker.model_runner.model.params)
    generations = [i for i, (kind, _) in enumerate(engine.log) if kind == "generate"]
    assert len(generations) == 3
    for start, end in zip([-1] + generations, generations):  # every weight, then the cache reset, then sampling
        between = engine.log[start + 1:end]
        assert {name for kind, name in between if kind == "load"} == names and between[-1] == ("reset", None)


def test_lora_is_folded_into_the_synced_weights_and_the_policy_is_left_untouched(tiny_model_dir, fake_vllm):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from tunesmith.train.stages.vllm_rollout import VllmRollout

    torch.manual_seed(0)
    policy = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                            LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    for name, param in policy.named_parameters():
        if "lora_B" in name:  # peft starts B at zero, which would fold to nothing
            torch.nn.init.normal_(param, std=0.1)
    before = {name: param.detach().clone() for name, param in policy.named_parameters()}
    rollout = VllmRollout(policy, str(tiny_model_dir), 128, 0.3, seed=1, processes=1)
    rollout.sync(policy)
    expected = copy.deepcopy(policy).merge_and_unload().state_dict()  # peft's own merge
    served = fake_vllm.created[0].llm_engine.model_executor.driver_worker.model_runner.model.network.state_dict()
    assert served.keys() == expected.keys()
    for name, tensor in expected.items():
        torch.testing.assert_close(served[name], tensor, rtol=1e-6, atol=1e-6, msg=name)
    for name, param in policy.named_parameters():
        assert torch.equal(param, before[name]), name  # no merge and unmerge in place


def test_dora_is_refused_with_the_way_out(tiny_model_dir, fake_vllm):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from tunesmith.train.stages.vllm_rollout import VllmRollout

    policy = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                            LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"], use_dora=True))
    with pytest.raises(TunesmithError, match="DoRA.*rollout_backend hf"):
        VllmRollout(policy, str(tiny_model_dir), 128, 0.3, seed=1, processes=1)


def test_the_vllm_backend_without_vllm_names_the_extra_before_the_model_loads(tiny_model_dir, tmp_path,
                                                                               monkeypatch):
    from tunesmith.infer.vllm_engine import vllm_available

    if vllm_available():
        pytest.skip("vllm is installed here")
    monkeypatch.setattr("tunesmith.model.load.load_model", fail_if_loaded)
    raw = grpo_run(tiny_model_dir, write_gsm8k(tmp_path / "data"), tmp_path / "run", "vllm")
    with pytest.raises(TunesmithError, match=r"rollout_backend vllm needs vllm.*pip install 'tunesmith\[vllm\]'"):
        run(raw)
