"""k-shot multiple-choice prompts as conversations, rendered by the model's own chat template.

Each solved dev example is a user turn (the question and its choices) answered by an assistant turn holding
the letter, so a chat model sees questions exactly as it saw conversations in training; the question scored
is the last user turn, and the letter is read from the first token of the assistant's reply.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tunesmith.errors import TunesmithError
from tunesmith.eval.benchmark import LETTERS, Question

STYLES_FILE = Path(__file__).with_name("prompt_styles.json")


@dataclass(frozen=True)
class PromptStyle:
    header: str  # opens the first user turn; {subject} is filled in
    answer_cue: str  # ends every question, right before the letter


def prompt_style(lang: str) -> PromptStyle:
    return PromptStyle(**json.loads(STYLES_FILE.read_text(encoding="utf-8"))[lang])


def format_question(question: Question, style: PromptStyle) -> str:
    lines = [question.question] + [f"{letter}. {choice}" for letter, choice in zip(LETTERS, question.choices)]
    return "\n".join(lines + [style.answer_cue])


def build_messages(question: Question, shots: list[Question], subject_name: str, style: PromptStyle) -> list[dict]:
    """The conversation for `question` after the solved `shots`, ending with the user's turn."""
    messages: list[dict] = []
    for shot in shots:
        messages.append({"role": "user", "content": format_question(shot, style)})
        messages.append({"role": "assistant", "content": shot.answer})
    messages.append({"role": "user", "content": format_question(question, style)})
    messages[0] = {"role": "user", "content": style.header.format(subject=subject_name) + messages[0]["content"]}
    return messages


def fitting_prompt(template, question: Question, shots: list[Question], subject_name: str, style: PromptStyle,
                   max_tokens: int | None) -> list[int]:
    """Prompt token ids, dropping shots from the end until the prompt (and one answer token) fits."""
    shots = list(shots)
    while True:
        ids = template.prompt_ids(build_messages(question, shots, subject_name, style))
        if max_tokens is None or len(ids) < max_tokens or not shots:
            return ids
        shots.pop()


def letter_token_ids(tokenizer) -> list[int]:
    """The token that starts each letter's reply (the letter alone, as the assistant's first token)."""
    ids = [tokenizer(letter, add_special_tokens=False)["input_ids"][0] for letter in LETTERS]
    if len(set(ids)) != len(ids):
        raise TunesmithError(f"the tokenizer gives the answer letters no distinct first tokens ({ids}); use another model")
    return ids
