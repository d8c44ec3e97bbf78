"""The guard in front of every route: API key check (constant time), loopback Host names when there is no
key, and a request body size limit.

Without a key the server trusts whoever can reach it, which is meant to be this machine only. A web page can
still reach a loopback port through DNS rebinding (its own domain re-pointed at 127.0.0.1), but its requests
then carry that domain in the Host header: so without a key, only Host names that denote loopback are served.

It is plain ASGI middleware rather than a per-route dependency so that no route, present or future, and not
even an unknown path, answers anything without the key.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress

from tunesmith.serve.errors import ApiError


class Guard:
    def __init__(self, app, api_key: str | None, max_body_bytes: int, max_image_body_bytes: int | None = None):
        self.app = app
        self.expected = _digest(f"Bearer {api_key}".encode()) if api_key else None
        self.max_body_bytes = max_body_bytes
        # base64 images make bodies large: a request with image parts has a limit of its own
        self.max_image_body_bytes = max(max_body_bytes, max_image_body_bytes or 0)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if self.expected is not None and not self._authorized(scope):
            return await _reject(send, ApiError(
                401, "missing or wrong API key; send it as 'Authorization: Bearer KEY'", "invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"}))
        if self.expected is None and not _loopback_host(scope):
            return await _reject(send, ApiError(
                403, "this server has no API key, so it answers only requests addressed to localhost or a loopback "
                "address; use http://127.0.0.1:PORT, or start it with an API key", "host_not_allowed"))
        body = await self._read_body(receive)
        if body is None or (len(body) > self.max_body_bytes and _IMAGE_PART not in body):
            limit = self.max_image_body_bytes if body is None else self.max_body_bytes
            return await _reject(send, ApiError(
                413, f"the request body is larger than {limit} bytes ({self.max_image_body_bytes} for a request "
                "with image parts)", "request_too_large"))
        await self.app(scope, _replay(body, receive), send)

    def _authorized(self, scope) -> bool:
        given = b""
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                given = value
        return hmac.compare_digest(_digest(given), self.expected)

    async def _read_body(self, receive) -> bytes | None:
        """The whole body, or None once it passes the limit (requests here are small JSON documents)."""
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return b"".join(chunks)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_image_body_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


_IMAGE_PART = b'"image_url"'  # a body holding image parts may use the larger limit


def _loopback_host(scope) -> bool:
    host = next((value.decode("latin-1") for name, value in scope.get("headers", []) if name == b"host"), "")
    name = host[1:host.find("]")] if host.startswith("[") else host.rsplit(":", 1)[0]
    if name.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _digest(value: bytes) -> bytes:
    # Comparing fixed-size digests keeps even the key's length from showing in the timing.
    return hashlib.sha256(value).digest()


def _replay(body: bytes, receive):
    sent = False

    async def replayed():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # later calls wait for the client to disconnect

    return replayed


async def _reject(send, error: ApiError) -> None:
    body = error.encoded()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in error.headers.items()]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
