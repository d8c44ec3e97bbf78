"""`tunesmith env`"""


def register(subparsers) -> None:
    parser = subparsers.add_parser("env", help="print versions of the stack and the device")
    parser.set_defaults(handler=run)


def run(args) -> int:
    from tunesmith.env import describe_env

    print(describe_env())
    return 0
