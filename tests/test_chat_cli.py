"""`tunesmith chat` driven through a pseudo-terminal, and the side-by-side layout of --compare."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pexpect
import pytest

from conftest import REPO, build_tiny_model
from tunesmith.infer.compare_cli import side_by_side

ENV = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")


@pytest.fixture(scope="module")
def lively_dir(tmp_path_factory, smollm2_dir):
    return build_tiny_model(tmp_path_factory.mktemp("lively"), smollm2_dir, initializer_range=0.5)


def expected_context_tokens(model_dir, messages) -> int:
    """Independent count: the tokenizer's own chat template, rendered by transformers directly."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def test_chat_session_in_a_terminal(lively_dir):
    command = [sys.executable, "-m", "tunesmith", "chat", "--model", str(lively_dir), "--temperature", "0",
               "--max-new-tokens", "5", "--system", "Be brief."]
    chat = pexpect.spawn(command[0], command[1:], cwd=REPO, env=ENV, encoding="utf-8", timeout=180)
    try:
        chat.expect("you> ")
        chat.sendline("hello there")
        chat.expect(r"assistant> (.*?)\r?\n\[context: (\d+) / 512 tokens\]")
        reply, shown = chat.match.group(1).replace("\r", "").strip(), int(chat.match.group(2))
        messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello there"},
                    {"role": "assistant", "content": reply}]
        assert shown == expected_context_tokens(lively_dir, messages)

        chat.expect("you> ")
        chat.sendline("/clear")
        chat.expect_exact("(history cleared)")
        chat.expect("you> ")
        chat.sendline("word " * 600)
        chat.expect(r"more than the model's context of 512")
        chat.expect("you> ")  # still running: the message was refused, not the session
        chat.sendline("/exit")
        chat.expect(pexpect.EOF)
    finally:
        chat.close(force=True)
    assert chat.exitstatus == 0


def test_compare_answers_with_every_model(lively_dir, tiny_model_dir):
    command = [sys.executable, "-m", "tunesmith", "chat", "--prompt", "hi", "--temperature", "0",
               "--max-new-tokens", "3", "--compare", str(lively_dir), str(tiny_model_dir)]
    done = subprocess.run(command, cwd=REPO, env=dict(ENV, COLUMNS="100"), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    header = next(line for line in done.stdout.splitlines() if "tokens]" in line)
    assert re.search(rf"{lively_dir.name} \[\d+/512 tokens\] +\| {tiny_model_dir.name} \[\d+/512 tokens\]", header)


def test_side_by_side_keeps_each_column_in_its_lane():
    text = side_by_side([("base", "short"), ("sft", "a much longer answer that has to wrap " * 3)], width=40)
    lines = text.splitlines()
    assert all(len(line) <= 40 for line in lines)
    left = " ".join(line.split(" | ")[0].strip() for line in lines[2:] if " | " in line).strip()
    right = " ".join(line.split(" | ")[1].strip() for line in lines[2:] if " | " in line)
    assert left == "short" and right.split() == ("a much longer answer that has to wrap " * 3).split()
