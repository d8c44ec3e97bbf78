"""`tunesmith api`: serve a model behind an OpenAI-compatible HTTP API.

The API key comes from --api-key or, so that it stays out of shell history and process listings, from the
TUNESMITH_API_KEY environment variable. Clients send it as `Authorization: Bearer KEY` on every request.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from tunesmith.commands.options import add_model_arguments, engine_from_args

API_KEY_VARIABLE = "TUNESMITH_API_KEY"


def register(subparsers) -> None:
    parser = subparsers.add_parser("api", help="serve a model with an OpenAI-compatible HTTP API")
    add_model_arguments(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--api-key", help=f"key clients must send as a Bearer token (default: ${API_KEY_VARIABLE})")
    parser.add_argument("--served-model-name", help="the model id clients use (default: the folder's name)")
    parser.add_argument("--max-batch", type=int, default=8, help="requests decoded together")
    parser.add_argument("--max-waiting", type=int, default=64, help="queued requests before answering 429")
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice); on a "
                        "shared machine fewer threads than cores often decode faster")
    parser.add_argument("--image-folder", action="append", default=[], metavar="DIR",
                        help="let requests name local image files inside DIR (repeatable; images otherwise come "
                        "inline as data: URLs, and URLs are never fetched)")
    parser.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                        help="allow browser pages from this origin (repeatable); CORS is off without it; "
                        "'*' (every origin) needs an API key")
    parser.set_defaults(handler=run)


def run(args) -> int:
    from tunesmith.errors import TunesmithError
    from tunesmith.infer.library_warnings import warnings_to_logging
    from tunesmith.serve.app import build_app
    from tunesmith.serve.common import ServerOptions
    from tunesmith.serve.run import is_loopback, serve_forever

    if importlib.util.find_spec("fastapi") is None or importlib.util.find_spec("uvicorn") is None:
        raise TunesmithError("the API server needs fastapi and uvicorn: pip install 'tunesmith[serve]'")
    api_key = args.api_key or os.environ.get(API_KEY_VARIABLE) or None  # env-ok: a secret kept out of ps and history
    if not is_loopback(args.host) and not api_key:
        raise TunesmithError(
            f"binding {args.host} without an API key would let anyone who can reach it use the model; "
            f"pass --api-key or set {API_KEY_VARIABLE}"
        )
    if args.max_batch < 1 or args.max_waiting < 1:
        raise TunesmithError("--max-batch and --max-waiting must be at least 1")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    options = ServerOptions(  # checked before the model loads: a refused option should not wait for it
        model_name=args.served_model_name or _default_name(args), api_key=api_key, max_batch=args.max_batch,
        max_waiting=args.max_waiting, cors_origins=args.cors_origin, image_folders=args.image_folder,
    )
    warnings_to_logging()
    engine = engine_from_args(args)
    print(f"serving '{options.model_name}' at http://{args.host}:{args.port}/v1"
          + (" (API key required)" if api_key else " (no API key)"), flush=True)
    serve_forever(build_app(engine, options), args.host, args.port)
    return 0


def _default_name(args) -> str:
    source = args.run or args.adapter or args.model
    return Path(source.rstrip("/")).name or source
