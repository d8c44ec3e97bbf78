"""Request bodies of the OpenAI-compatible API, validated strictly: a misspelt or unsupported field is a 400
naming the field, never silently ignored. Fields clients commonly send that change nothing here (user,
metadata, store...) are accepted."""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tunesmith.data.media_render import IMAGE_MARK


MAX_STOP_CHARS = 256  # each stop string is searched for at every token: long ones would slow every reply
MAX_REPETITION_PENALTY = 100.0  # beyond this the penalty only turns logits into noise


class Strict(BaseModel):
    # allow_inf_nan off: inf or nan in any number would reach the sampler and poison a batch's logits.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class TextPart(Strict):
    type: Literal["text"]
    text: str


class ImageUrl(Strict):
    url: str  # a data: URL; a local path only where the server allows it (serve/images.py); never fetched
    detail: Literal["auto", "low", "high"] | None = None  # accepted; the model's processor decides the size


class ImagePart(Strict):
    type: Literal["image_url"]  # audio and files are refused
    image_url: ImageUrl


class FunctionCall(Strict):
    name: str
    arguments: str


class ToolCall(Strict):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class Message(Strict):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Union[str, list[Annotated[Union[TextPart, ImagePart], Field(discriminator="type")]], None] = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    refusal: str | None = None

    def text(self) -> str:
        """The content as text; each image part stands as the image mark (data/media_render.py)."""
        if isinstance(self.content, list):
            return "".join(part.text if isinstance(part, TextPart) else IMAGE_MARK for part in self.content)
        return self.content or ""

    def image_urls(self) -> list[str]:
        return [part.image_url.url for part in self.content or [] if isinstance(part, ImagePart)] \
            if isinstance(self.content, list) else []


class FunctionSpec(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    description: str | None = None
    parameters: dict | None = None
    strict: bool | None = None


class Tool(Strict):
    type: Literal["function"]
    function: FunctionSpec


class NamedFunction(Strict):
    name: str


class NamedToolChoice(Strict):
    type: Literal["function"]
    function: NamedFunction


class TextFormat(Strict):
    type: Literal["text"]  # structured output (json_object, json_schema) is not supported: refused, not ignored


class StreamOptions(Strict):
    include_usage: bool = False
    include_obfuscation: bool | None = None


class Sampling(Strict):
    """Generation fields shared by chat and text completions."""

    model: str
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    # top_k is also checked against the served model's vocabulary (serve/common.py).
    top_k: int | None = Field(None, ge=0, le=2**31 - 1, description="Extension: keep only the k most likely tokens.")
    repetition_penalty: float | None = Field(None, gt=0, le=MAX_REPETITION_PENALTY,
                                             description="Extension: transformers' penalty.")
    n: int = Field(1, ge=1, le=16)
    stop: Union[str, list[str], None] = None
    seed: int | None = Field(None, ge=0, lt=2**63)
    presence_penalty: float = Field(0.0, ge=-2, le=2)
    frequency_penalty: float = Field(0.0, ge=-2, le=2)
    user: str | None = None
    metadata: dict | None = None
    store: bool | None = None
    service_tier: str | None = None

    @field_validator("stop")
    @classmethod
    def _at_most_four_stops(cls, value):
        stops = [value] if isinstance(value, str) else value or []
        if len(stops) > 4 or any(not s or len(s) > MAX_STOP_CHARS for s in stops):
            raise ValueError(f"give at most 4 non-empty stop strings of at most {MAX_STOP_CHARS} characters")
        return stops


class ChatRequest(Sampling):
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    tools: list[Tool] | None = None
    tool_choice: Union[Literal["none", "auto", "required"], NamedToolChoice, None] = None
    parallel_tool_calls: bool | None = None
    response_format: TextFormat | None = None
    logprobs: Literal[False] | None = None


class CompletionRequest(Sampling):
    prompt: Union[str, list[str]]
    max_tokens: int | None = Field(16, ge=1)  # OpenAI's default for text completions
    echo: Literal[False] = False
    logprobs: None = None
    suffix: None = None
    best_of: Literal[1] | None = None

    @field_validator("prompt")
    @classmethod
    def _non_empty(cls, value):
        prompts = [value] if isinstance(value, str) else value
        if not prompts or any(not p for p in prompts):
            raise ValueError("the prompt must be non-empty text (or a non-empty list of non-empty texts)")
        return prompts
