"""`tunesmith convert-config lf.yaml [-o out.yaml]`: a LLaMA-Factory training YAML as a native config."""


def register(subparsers) -> None:
    parser = subparsers.add_parser("convert-config", help="translate a LLaMA-Factory training YAML to a tunesmith config")
    parser.add_argument("config", help="LLaMA-Factory training YAML")
    parser.add_argument("-o", "--output", help="write the tunesmith YAML here (default: print it)")
    parser.set_defaults(handler=run)


def run(args) -> int:
    import sys
    from pathlib import Path

    import yaml

    from tunesmith.config.llamafactory import looks_like_llamafactory, translate
    from tunesmith.config.load import read_yaml, validate_config
    from tunesmith.errors import TunesmithError

    raw = read_yaml(args.config)
    if not looks_like_llamafactory(raw):
        raise TunesmithError(f"{args.config} has no model_name_or_path: it is not a LLaMA-Factory training YAML")
    translation = translate(raw)
    validate_config(translation.config, source=f"{args.config} (translated)")
    header = f"# translated from the LLaMA-Factory config {args.config}\n"
    header += "".join(f"# {line}\n" for line in translation.notes())
    text = header + yaml.safe_dump(translation.config, sort_keys=False, allow_unicode=True)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        print(text, end="")
    for line in translation.notes():
        print(line, file=sys.stderr)
    return 0
