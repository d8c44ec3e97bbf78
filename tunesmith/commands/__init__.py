"""One module per `tunesmith` subcommand: `register(subparsers)` adds its parser and handler."""
