"""The `tunesmith` command. Each subcommand lives in tunesmith/commands/<name>.py and imports its heavy
libraries only when run, so `tunesmith --help` answers at once."""

from __future__ import annotations

import argparse
import importlib
import sys

from tunesmith import __version__
from tunesmith.commands.schema_flags import CommandParser
from tunesmith.errors import TunesmithError

# Modules under tunesmith.commands, in the order `--help` lists them. Each has `register(subparsers)`.
COMMANDS = ["train", "chat", "api", "data", "env", "eval", "export", "webui", "estimate", "convert_config"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tunesmith", description="Fine-tune causal language models from one YAML file.")
    parser.add_argument("--version", action="version", version=f"tunesmith {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=CommandParser)
    for name in COMMANDS:
        importlib.import_module(f"tunesmith.commands.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except TunesmithError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
