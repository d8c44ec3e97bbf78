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


def image_prompt_ids(template, rendered: str, contents: list[str], images: list) -> list[int]:
    """`ids_keeping_typed_text` of a prompt with images: each image part's mark (in `contents` and in the
    rendering) becomes that image's tokens, and the text between marks keeps what the client typed as text."""
    from tunesmith.data.media_render import IMAGE_MARK

    pieces = rendered.split(IMAGE_MARK)
    if len(pieces) - 1 != len(images):
        raise bad_request("a text part holds the private-use character U+E002, or this model's chat template "
                          "rewrites messages with images; remove that character", "messages")
    typed_in: list[list[str]] = [[] for _ in pieces]  # the contents' fragments, by the piece they land in
    index = 0
    for content in contents:
        fragments = content.split(IMAGE_MARK)
        for offset, fragment in enumerate(fragments):
            typed_in[index + offset].append(fragment)
        index += len(fragments) - 1
    ids = []
    for number, piece in enumerate(pieces):
        ids += ids_keeping_typed_text(template.tokenizer, piece, typed_in[number])
        if number < len(images):
            ids += template.media.image_ids(images[number])
    return ids


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
