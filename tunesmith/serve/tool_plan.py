"""How a chat request's tools and tool_choice turn into the prompt and the reading of the reply."""

from __future__ import annotations

from dataclasses import dataclass, field

from tunesmith.infer.tool_calls import ContentGate, ToolCallFormat, tool_call_format
from tunesmith.serve.errors import bad_request
from tunesmith.serve.schemas import ChatRequest, NamedToolChoice


@dataclass
class ToolPlan:
    tools: list[dict] | None = None  # shown to the template
    format: ToolCallFormat | None = None  # replies are searched for calls in this format
    prefix: str = ""  # reply start pre-filled to force a call (tool_choice "required" or a named function)

    def gate(self) -> ContentGate | None:
        """A streaming gate that holds back tool-call text; already shut when the reply starts with a call."""
        if self.format is None:
            return None
        gate = ContentGate(self.format.start)
        gate.feed(self.prefix)
        return gate

    def read(self, generated: str) -> tuple[str, list[dict]]:
        """The reply's content and its tool calls."""
        text = self.prefix + generated
        return self.format.split(text) if self.format else (text, [])


@dataclass
class ChoiceStream:
    """Per-choice streaming state: what was shown so far as content."""

    gate: ContentGate | None
    shown: list[str] = field(default_factory=list)

    def content(self, piece: str) -> str:
        out = self.gate.feed(piece) if self.gate else piece
        self.shown.append(out)
        return out


def plan_tools(body: ChatRequest, template_source: str) -> ToolPlan:
    if not body.tools or body.tool_choice == "none":
        return ToolPlan()
    tools = [tool.model_dump(exclude_none=True) for tool in body.tools]
    named = body.tool_choice.function.name if isinstance(body.tool_choice, NamedToolChoice) else None
    if named is not None:
        tools = [tool for tool in tools if tool["function"]["name"] == named]
        if not tools:
            raise bad_request(f"tool_choice names '{named}', which is not among the tools", "tool_choice")
    forced = named is not None or body.tool_choice == "required"
    format = tool_call_format(template_source)
    if format is None:
        if forced:
            raise bad_request("this model's chat template defines no tool-call format, so a tool call cannot "
                              "be required; use tool_choice 'auto'", "tool_choice")
        return ToolPlan(tools)
    return ToolPlan(tools, format, format.forced_prefix(named) if forced else "")
