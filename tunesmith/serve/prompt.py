"""A chat request's prompt ids, with what the client typed kept as text.

A tokenizer turns the text of its added tokens (`<|im_end|>`, `<tool_call>`...) into those control tokens
wherever it meets them. In the template's own markup that is the point; in a message's content it would let
a client close a turn or forge a tool call by typing the marker. So when a message's content holds such text,
the prompt is tokenized in pieces: the template's markup as usual, each content with every added-token text
in it spelt out as ordinary tokens. A request without such text is tokenized in one piece, exactly as in
training.
"""

from __future__ import annotations

import re

from tunesmith.serve.errors import bad_request


def ids_keeping_typed_text(tokenizer, rendered: str, contents: list[str]) -> list[int]:
    """Token ids of `rendered`, the template's text, in which `contents` (message texts, in order) stay text."""
    marker = _added_token_pattern(tokenizer)
    typed = [content for content in contents if marker and marker.search(content)]
    encode = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"] if text else []  # noqa: E731
    if not typed:
        return encode(rendered)
    ids, cursor = [], 0
    for content in typed:
        start = rendered.find(content, cursor)
        if start < 0:
            raise bad_request(
                f"a message holds the text of a control token ({marker.search(content).group()}) and this model's "
                "chat template rewrites that message, so it cannot be kept as plain text; remove the marker",
                "messages")
        ids += encode(rendered[cursor:start]) + _as_text(content, marker, encode)
        cursor = start + len(content)
    return ids + encode(rendered[cursor:])


def _as_text(content: str, marker: re.Pattern, encode) -> list[int]:
    """`content` tokenized with each added-token text split after its first character, so it matches no
    added token and is spelt with ordinary tokens that decode to the same characters."""
    ids, cursor = [], 0
    for found in marker.finditer(content):
        ids += encode(content[cursor:found.start()]) + encode(found.group()[0]) + encode(found.group()[1:])
        cursor = found.end()
    return ids + encode(content[cursor:])


def _added_token_pattern(tokenizer) -> re.Pattern | None:
    texts = sorted((text for text in tokenizer.get_added_vocab() if text), key=len, reverse=True)
    return re.compile("|".join(re.escape(text) for text in texts)) if texts else None
