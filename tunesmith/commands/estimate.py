"""`tunesmith estimate CONFIG [key=value ...]`: parameters and peak accelerator memory, nothing loaded."""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "estimate", help="count parameters and estimate peak training memory from a config, without loading weights"
    )
    parser.add_argument("config", help="YAML config of the run (native or LLaMA-Factory)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. train.batch_size=8")
    parser.set_defaults(handler=run)


def run(args) -> int:
    from tunesmith.config import load_config
    from tunesmith.model.estimate import estimate_memory

    print(estimate_memory(load_config(args.config, args.overrides)).report())
    return 0
