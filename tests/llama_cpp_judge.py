"""llama.cpp as the judge of our GGUF files: node-llama-cpp's prebuilt CPU binary, driven by
tests/llama_cpp/judge.mjs.

Where the package lives: the folder named by TUNESMITH_NODE_LLAMA_CPP (scripts/test.sh installs it once,
inside the venv, and passes that folder), else a folder in this test session's own cache (conftest points
XDG_CACHE_HOME at a temporary folder), installed there on first use. Never the user's home caches. A test
skips only when npm itself cannot reach its registry."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

PACKAGE = "node-llama-cpp@3.21.1"
JUDGE = Path(__file__).with_name("llama_cpp") / "judge.mjs"
LOCATION_VARIABLE = "TUNESMITH_NODE_LLAMA_CPP"


def install_dir() -> Path:
    """The folder whose node_modules holds node-llama-cpp: the one CI names, else a session folder."""
    named = os.environ.get(LOCATION_VARIABLE)
    if named:
        return Path(named)
    session = os.environ.get("XDG_CACHE_HOME") or tempfile.gettempdir()
    return Path(session) / "tunesmith-tests" / PACKAGE.replace("@", "-")


def node_modules() -> Path:
    """The node_modules folder holding node-llama-cpp, installed on first use."""
    folder = install_dir()
    modules = folder / "node_modules"
    if (modules / "node-llama-cpp" / "package.json").is_file():
        return modules
    if shutil.which("npm") is None or shutil.which("node") is None:
        pytest.fail("node and npm are needed to judge GGUF files with llama.cpp; run scripts/test.sh or "
                    "apt-get install nodejs npm")
    folder.mkdir(parents=True, exist_ok=True)
    # npm's own download cache goes beside the package, not into ~/.npm
    install = subprocess.run(["npm", "install", "--prefix", str(folder), "--cache", str(folder / "npm-cache"),
                              "-E", PACKAGE, "--no-audit", "--no-fund"], capture_output=True, text=True, timeout=600)
    if install.returncode != 0:
        reachable = subprocess.run(["npm", "ping", "--cache", str(folder / "npm-cache")], capture_output=True,
                                   timeout=60).returncode == 0
        if not reachable:
            pytest.skip(f"npm cannot reach its registry to install {PACKAGE} (llama.cpp)")
        pytest.fail(f"npm install {PACKAGE} into {folder} failed: {install.stderr[-2000:]}")
    return modules


def judge(modules: Path, gguf: Path, texts: list[str], prompts: list[list[int]], new_tokens: int) -> dict:
    """llama.cpp's tokens for each text (special tokens parsed, none added) and its greedy continuation
    of each prompt, `new_tokens` long."""
    request = {"model": str(gguf), "texts": texts, "prompts": prompts, "new_tokens": new_tokens}
    result = subprocess.run(["node", str(JUDGE), str(modules)], input=json.dumps(request), capture_output=True,
                            text=True, timeout=300)
    if result.returncode != 0:
        raise AssertionError(f"llama.cpp could not run {gguf.name}: {result.stderr[-3000:]}")
    return json.loads(result.stdout)
