"""`tunesmith data preview CONFIG [--n 3] [--json]`"""


def register(subparsers) -> None:
    parser = subparsers.add_parser("data", help="inspect a config's data as training will see it")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    preview = actions.add_parser("preview", help="show encoded samples with trained tokens marked, and statistics")
    preview.add_argument("config", help="YAML config (only the model's tokenizer is loaded)")
    preview.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. data.max_length=512")
    preview.add_argument("--n", type=int, default=3, help="how many samples to show")
    preview.add_argument("--json", action="store_true", help="one JSON object per sample: input_ids and labels")
    preview.set_defaults(handler=run_preview)


def run_preview(args) -> int:
    import sys

    from tunesmith.config import load_config
    from tunesmith.train.preview import prepare_for_preview, preview_lines

    tokenizer, prepared = prepare_for_preview(load_config(args.config, args.overrides))
    for line in preview_lines(tokenizer, prepared, args.n, args.json, color=sys.stdout.isatty()):
        print(line)
    return 0
