"""The FastAPI application: routes, error shapes, the key and size guard, optional CORS, and the batcher."""

from __future__ import annotations

import contextlib

from tunesmith.serve.common import ServerOptions, ServerState
from tunesmith.serve.scheduler import BatchScheduler


def build_app(engine, options: ServerOptions):
    """An ASGI app serving `engine` under the name `options.model_name`."""
    from fastapi import FastAPI

    from tunesmith.serve.chat_route import add_chat_route
    from tunesmith.serve.completions_route import add_completions_route
    from tunesmith.serve.errors import install_handlers
    from tunesmith.serve.security import Guard

    scheduler = BatchScheduler(engine, options.max_batch, options.max_waiting)
    state = ServerState(engine, options, scheduler)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        scheduler.close()
        state.tokenizing.shutdown(wait=False, cancel_futures=True)

    # No /docs or /openapi.json: the server exposes the API and nothing else.
    app = FastAPI(title="tunesmith", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    install_handlers(app)
    _add_model_routes(app, state)
    add_chat_route(app, state)
    add_completions_route(app, state)
    app.add_middleware(Guard, api_key=options.api_key, max_body_bytes=options.max_body_bytes,
                       max_image_body_bytes=options.max_image_body_bytes)
    if options.cors_origins:  # added last so it runs first: browsers' preflight requests carry no key
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=options.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])
    app.state.tunesmith = state
    return app


def _add_model_routes(app, state: ServerState) -> None:
    def card() -> dict:
        return {"id": state.options.model_name, "object": "model", "created": state.created, "owned_by": "tunesmith"}

    @app.get("/v1/models")
    async def list_models():
        return {"object": "list", "data": [card()]}

    @app.get("/v1/models/{name:path}")
    async def get_model(name: str):
        state.check_model(name)
        return card()
