"""Errors in OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`, with OpenAI's status codes."""

from __future__ import annotations

import json


class ApiError(Exception):
    def __init__(self, status: int, message: str, code: str, param: str | None = None,
                 kind: str = "invalid_request_error", headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.param, self.kind = status, message, code, param, kind
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}

    def encoded(self) -> bytes:
        return json.dumps(self.body()).encode()


def bad_request(message: str, param: str | None = None, code: str = "invalid_value") -> ApiError:
    return ApiError(400, message, code, param)


def unknown_model(name: str, served: str) -> ApiError:
    return ApiError(404, f"the model '{name}' does not exist; this server serves '{served}'", "model_not_found",
                    "model")


def queue_full(retry_after_s: int) -> ApiError:
    return ApiError(429, "the server is busy: too many requests are waiting; retry shortly",
                    "rate_limit_exceeded", kind="requests", headers={"Retry-After": str(retry_after_s)})


def from_validation(errors: list[dict]) -> ApiError:
    """A 400 naming the first invalid field, from FastAPI's validation errors."""
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    location = [str(part) for part in first.get("loc", ()) if part != "body"]
    param = ".".join(location) or None
    if first.get("type") == "extra_forbidden":
        return bad_request(f"unrecognized request argument: {param}", param, "unknown_parameter")
    if first.get("type") == "json_invalid":
        return bad_request("the request body is not valid JSON", None, "invalid_json")
    return bad_request(f"{param or 'body'}: {first.get('msg', 'invalid value')}", param)


def install_handlers(app) -> None:
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException

    def respond(error: ApiError) -> JSONResponse:
        return JSONResponse(error.body(), status_code=error.status, headers=error.headers)

    @app.exception_handler(ApiError)
    async def _api_error(request, error: ApiError):
        return respond(error)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, error: RequestValidationError):
        return respond(from_validation(list(error.errors())))

    @app.exception_handler(HTTPException)
    async def _http(request, error: HTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
        return respond(ApiError(error.status_code, f"{request.method} {request.url.path}: {error.detail}", code))

    @app.exception_handler(Exception)
    async def _unexpected(request, error: Exception):
        return respond(ApiError(500, f"internal error: {type(error).__name__}: {error}", "server_error",
                                kind="server_error"))
