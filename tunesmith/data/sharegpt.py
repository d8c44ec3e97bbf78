"""Conversation formats: sharegpt (from/value with configurable tags) and OpenAI messages (role/content).

Function calls become assistant messages with `tool_calls` and observations become `tool` messages, the
shape Hugging Face chat templates take, so a template with tool support renders them its own way.
"""

from __future__ import annotations

import json

from tunesmith.data.parsed import Parsed, kto_tag
from tunesmith.data.registry import DatasetSpec
from tunesmith.errors import TunesmithError

SHAREGPT_TAGS = {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt",
                 "observation_tag": "observation", "function_tag": "function_call", "system_tag": "system"}
OPENAI_TAGS = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant",
               "observation_tag": "tool", "function_tag": "function_call", "system_tag": "system"}


def sharegpt(row: dict, spec: DatasetSpec, where: str) -> Parsed:
    return _parse(row, spec, where, {**SHAREGPT_TAGS, **spec.tags}, default_messages="conversations")


def openai(row: dict, spec: DatasetSpec, where: str) -> Parsed:
    return _parse(row, spec, where, {**OPENAI_TAGS, **spec.tags}, default_messages="messages")


def _parse(row: dict, spec: DatasetSpec, where: str, tags: dict, default_messages: str) -> Parsed:
    columns = spec.columns
    name = columns.get("messages", default_messages)
    turns = row.get(name)
    if not isinstance(turns, list) or not turns:
        problem = "is missing" if turns is None else "must be a non-empty list of messages"
        raise TunesmithError(f"{where}: column '{name}' {problem} (columns present: {', '.join(row) or 'none'})")
    messages = [_turn(turn, number, tags, where) for number, turn in enumerate(turns, 1)]
    system = row.get(columns["system"]) if "system" in columns else None
    if system and messages[0]["role"] != "system":
        messages.insert(0, {"role": "system", "content": str(system).strip()})
    parsed = Parsed(messages, tools=_tools(row.get(columns["tools"]) if "tools" in columns else None, where))
    if "chosen" in columns or "rejected" in columns:
        parsed.chosen = _reply(row, columns.get("chosen", "chosen"), tags, where)
        parsed.rejected = _reply(row, columns.get("rejected", "rejected"), tags, where)
    if "kto_tag" in columns:
        parsed.kto_tag = kto_tag(row, columns["kto_tag"], where)
    return parsed


def _turn(turn, number: int, tags: dict, where: str) -> dict:
    if not isinstance(turn, dict):
        raise TunesmithError(f"{where}: message {number} must be an object, got {type(turn).__name__}")
    roles = {tags["user_tag"]: "user", tags["assistant_tag"]: "assistant", tags["system_tag"]: "system",
             tags["observation_tag"]: "tool", tags["function_tag"]: "function"}
    value = turn.get(tags["role_tag"])
    if value not in roles:
        raise TunesmithError(
            f"{where}: message {number} has unknown role {value!r} in '{tags['role_tag']}'; expected one of "
            f"{', '.join(map(repr, roles))} (set 'tags' in dataset_info.json to map other names)"
        )
    content = turn.get(tags["content_tag"])
    if roles[value] == "function":
        return {"role": "assistant", "content": "", "tool_calls": _tool_calls(content, number, where)}
    if content is None and not turn.get("tool_calls"):
        raise TunesmithError(f"{where}: message {number} has no '{tags['content_tag']}'")
    if content is not None and not isinstance(content, str):
        raise TunesmithError(f"{where}: message {number} content must be a string, got {type(content).__name__}")
    message = {"role": roles[value], "content": (content or "").strip()}
    for extra in ("tool_calls", "name", "tool_call_id", "reasoning_content"):  # OpenAI fields kept as they are
        if turn.get(extra) is not None:
            message[extra] = turn[extra]
    return message


def _reply(row: dict, name: str, tags: dict, where: str) -> dict:
    value = row.get(name)
    if isinstance(value, str):
        return {"role": "assistant", "content": value.strip()}
    if not isinstance(value, dict):
        raise TunesmithError(f"{where}: missing or malformed '{name}' column (expected a message or a string)")
    message = _turn(value, 1, tags, f"{where}: column '{name}'")
    if message["role"] != "assistant":
        raise TunesmithError(f"{where}: '{name}' must be an assistant reply, got role '{message['role']}'")
    return message


def _tool_calls(content, number: int, where: str) -> list[dict]:
    """A function_call turn's JSON ({"name", "arguments"} or a list of them) as OpenAI tool_calls."""
    try:
        calls = json.loads(content) if isinstance(content, str) else content
    except json.JSONDecodeError as err:
        raise TunesmithError(f"{where}: message {number} (function call) is not valid JSON ({err.msg})") from None
    calls = calls if isinstance(calls, list) else [calls]
    if not all(isinstance(call, dict) and "name" in call for call in calls):
        raise TunesmithError(f"{where}: message {number} (function call) must hold {{\"name\", \"arguments\"}}")
    return [{"type": "function", "function": {"name": call["name"], "arguments": call.get("arguments", {})}}
            for call in calls]


def _tools(value, where: str) -> list[dict] | None:
    """The tools column (a JSON string or a list) as OpenAI-style tool definitions."""
    if value in (None, "", []):
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as err:
            raise TunesmithError(f"{where}: the tools column is not valid JSON ({err.msg})") from None
    value = value if isinstance(value, list) else [value]
    if not all(isinstance(tool, dict) for tool in value):
        raise TunesmithError(f"{where}: the tools column must be a list of tool definitions (objects)")
    return [tool if "function" in tool else {"type": "function", "function": tool} for tool in value]
