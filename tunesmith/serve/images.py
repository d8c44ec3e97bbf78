"""Images in API requests: OpenAI `image_url` content parts.

An image comes inline, as a `data:` URL (base64). A local file is read only when the server was started with
--image-folder, and only inside those folders (path_guard.py). No URL is ever fetched: a server that fetches
what a client names can be made to reach internal addresses (LLaMA-Factory's CVE-2025-61784).
"""

from __future__ import annotations

import base64
import binascii
import io

from tunesmith.errors import TunesmithError
from tunesmith.serve.errors import bad_request


def decode_image_url(url: str, guard, param: str):
    """The RGB pixels an image_url names; `guard` (a PathGuard, or None) decides which local files may be read.
    `param` names the message in errors (e.g. messages.0.content)."""
    if url.startswith("data:"):
        return _decoded(_data_bytes(url, param), param)
    if url.startswith(("http://", "https://")):
        raise bad_request("image URLs are never fetched by this server; send the image inline as a data: URL "
                          "(data:image/png;base64,...)", param)
    if guard is None:
        raise bad_request("local image paths are refused; send the image inline as a data: URL, or start the "
                          "server with --image-folder DIR to allow files inside DIR", param)
    try:
        path = guard.existing(url.removeprefix("file://"), "image_url", kind="file")
    except TunesmithError as err:
        raise bad_request(str(err), param) from None
    return _decoded(path.read_bytes(), param)


def _data_bytes(url: str, param: str) -> bytes:
    header, _, payload = url.partition(",")
    if not header.endswith(";base64") or not header[len("data:"):].startswith("image/"):
        raise bad_request("an image data: URL must be base64 image data (data:image/png;base64,...)", param)
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise bad_request("the image data: URL holds no valid base64", param) from None


def _decoded(data: bytes, param: str):
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as err:
        raise bad_request(f"an image in the request cannot be read ({err})", param) from None
