"""`tunesmith train CONFIG [key=value ...]`"""


def register(subparsers) -> None:
    parser = subparsers.add_parser("train", help="train a model as a config describes")
    parser.add_argument("config", help="YAML config (see examples/quickstart.yaml)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. train.lr=2e-4")
    parser.set_defaults(handler=run)


def run(args) -> int:
    from tunesmith.config import load_config
    from tunesmith.dist.launch import launch, needs_launch
    from tunesmith.train.run import train

    config = load_config(args.config, args.overrides)
    if needs_launch(config.dist):
        return launch(config.dist, [args.config, *args.overrides])
    train(config)
    return 0
