"""`tunesmith webui`: the browser UI (Gradio) for training, evaluation, chat and export."""

from tunesmith.errors import TunesmithError

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def register(subparsers) -> None:
    parser = subparsers.add_parser("webui", help="train, evaluate, chat and export from a web page")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: this machine only)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--auth", metavar="USER:PASS", help="require this login for every page and request")
    parser.add_argument("--allowed-root", action="append", default=[], metavar="DIR",
                        help="only accept typed paths inside DIR (repeatable; default: any path)")
    parser.add_argument("--runs-dir", default="runs", help="folder where runs started from the page are created")
    parser.add_argument("--share", action="store_true", help="also open a public Gradio share link (off by default)")
    parser.set_defaults(handler=run)


def parse_auth(text: str | None) -> tuple[str, str] | None:
    if text is None:
        return None
    user, sep, password = text.partition(":")
    if not sep or not user or not password:
        raise TunesmithError("--auth takes USER:PASS, both non-empty (e.g. --auth admin:s3cret)")
    return user, password


def run(args) -> int:
    import importlib.util

    if importlib.util.find_spec("gradio") is None:
        raise TunesmithError("the web UI needs gradio; install it with: pip install 'tunesmith[webui]'")
    from tunesmith.infer.library_warnings import warnings_to_logging
    from tunesmith.webui.app import launch
    from tunesmith.webui.context import WebuiContext

    auth = parse_auth(args.auth)
    if args.host not in LOOPBACK and auth is None:
        print(f"warning: serving on {args.host} without --auth: anyone who reaches this address can train and "
              "run models here")
    warnings_to_logging()
    ctx = WebuiContext.create(args.runs_dir, args.allowed_root)
    launch(ctx, args.host, args.port, auth, args.share)
    return 0
