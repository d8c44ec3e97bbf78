"""Typed records: what every data format converts into. Nothing after data/formats sees a source format."""

from __future__ import annotations

from dataclasses import dataclass, field

ROLES = ("system", "user", "assistant", "tool")


def _media_files():
    """Image (or video) files a record's `<image>` (`<video>`) placeholders stand for, in order (absolute
    paths; data/media.py)."""
    return field(default_factory=list, compare=False)


def _source():
    """Where a record with images came from ('file: record N'), so a later media error can name it."""
    return field(default="", compare=False, repr=False)


@dataclass
class Conversation:
    """A chat: messages as {"role", "content"} dicts in the shape `apply_chat_template` takes."""

    messages: list[dict[str, str]]
    tools: list[dict] | None = None
    # The row's other columns by name (e.g. a reference answer), for online stages' reward functions; not part
    # of the conversation itself, so two records with the same messages are equal whatever their columns.
    columns: dict = field(default_factory=dict, compare=False)
    images: list[str] = _media_files()
    videos: list[str] = _media_files()
    source: str = _source()


@dataclass
class Text:
    """Plain text for pre-training."""

    text: str


@dataclass
class Preference:
    """A prompt (a conversation ending with a user turn) and two candidate assistant replies."""

    prompt: list[dict[str, str]]
    chosen: dict[str, str]
    rejected: dict[str, str]
    tools: list[dict] | None = None
    images: list[str] = _media_files()
    videos: list[str] = _media_files()
    source: str = _source()


@dataclass
class KtoExample:
    """A prompt and one reply labelled desirable or undesirable (KTO)."""

    prompt: list[dict[str, str]]
    completion: dict[str, str]
    desirable: bool
    tools: list[dict] | None = None
    images: list[str] = _media_files()
    videos: list[str] = _media_files()
    source: str = _source()


@dataclass
class Encoded:
    """A tokenized sample: labels are -100 where no loss is taken."""

    input_ids: list[int]
    labels: list[int]
    meta: dict = field(default_factory=dict)

    @property
    def num_targets(self) -> int:
        return len(self.labels) - self.labels.count(-100)
