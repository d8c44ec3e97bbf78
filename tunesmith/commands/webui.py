"""`tunesmith webui`: the browser UI (Gradio) for training, evaluation, chat and export.

The page can train, run and export models and read and write files, so anyone who can reach it can do that:
outside this machine (a non-loopback address or a --share link) it needs a login. The login comes from
--auth, or, to keep it out of process listings, from --auth-file or the TUNESMITH_WEBUI_AUTH variable.
"""

import os
from pathlib import Path

from tunesmith.errors import TunesmithError

AUTH_VARIABLE = "TUNESMITH_WEBUI_AUTH"


def register(subparsers) -> None:
    parser = subparsers.add_parser("webui", help="train, evaluate, chat and export from a web page")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: this machine only)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--auth", metavar="USER:PASS", help="require this login for every page and request "
                        f"(visible to other local users in process listings: prefer --auth-file or ${AUTH_VARIABLE})")
    parser.add_argument("--auth-file", metavar="FILE", help="read the USER:PASS login from the first line of FILE")
    parser.add_argument("--allowed-root", action="append", default=[], metavar="DIR",
                        help="also accept typed paths inside DIR (repeatable); the folder the UI starts in and "
                        "tunesmith's cache folder are always allowed, nothing else is")
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


def login_from(args) -> tuple[str, str] | None:
    """The login from --auth, --auth-file or the environment, in that order."""
    if args.auth is None and args.auth_file:
        try:
            lines = Path(args.auth_file).read_text(encoding="utf-8").splitlines()
        except OSError as err:
            raise TunesmithError(f"--auth-file {args.auth_file}: cannot read it ({err.strerror}); fix the path") from None
        return parse_auth(lines[0].strip() if lines else "")
    return parse_auth(args.auth if args.auth is not None else os.environ.get(AUTH_VARIABLE) or None)  # env-ok: secret


def refuse_open_without_login(host: str, share: bool, auth) -> None:
    from tunesmith.serve.run import is_loopback

    if auth is None and (share or not is_loopback(host)):
        reach = "a public --share link" if share else f"address {host}"
        raise TunesmithError(f"serving the web UI on {reach} without a login would let anyone who reaches it train, "
                             f"run and export models and write files here; pass --auth-file FILE (USER:PASS) or "
                             f"set {AUTH_VARIABLE}")


def run(args) -> int:
    import importlib.util

    if importlib.util.find_spec("gradio") is None:
        raise TunesmithError("the web UI needs gradio; install it with: pip install 'tunesmith[webui]'")
    from tunesmith.infer.library_warnings import warnings_to_logging
    from tunesmith.webui.app import launch
    from tunesmith.webui.context import WebuiContext

    auth = login_from(args)
    refuse_open_without_login(args.host, args.share, auth)
    warnings_to_logging()
    ctx = WebuiContext.create(args.runs_dir, args.allowed_root)
    launch(ctx, args.host, args.port, auth, args.share)
    return 0
