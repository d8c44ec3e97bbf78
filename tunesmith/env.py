"""`tunesmith env`: versions of the stack and the device, for bug reports."""

from __future__ import annotations

import os
import platform
from importlib.metadata import PackageNotFoundError, version

PACKAGES = ("tunesmith", "torch", "transformers", "peft", "accelerate", "datasets", "gguf", "safetensors",
            "bitsandbytes", "deepspeed", "vllm", "gradio", "fastapi")


def describe_env() -> str:
    lines = [f"python: {platform.python_version()} ({platform.platform()})", f"cpu cores: {os.cpu_count()}"]
    for name in PACKAGES:
        try:
            lines.append(f"{name}: {version(name)}")
        except PackageNotFoundError:
            lines.append(f"{name}: not installed")
    import torch

    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            lines.append(f"device {index}: {props.name}, {props.total_memory / 2**30:.1f} GiB")
    else:
        lines.append("device: cpu (no CUDA device visible)")
    return "\n".join(lines)
