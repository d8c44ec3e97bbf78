"""`tunesmith chat`: interactive streaming chat, or one answer with --prompt."""

from tunesmith.commands.options import add_model_arguments, engine_from_args


def register(subparsers) -> None:
    parser = subparsers.add_parser("chat", help="chat with a model in the terminal")
    add_model_arguments(parser)
    parser.add_argument("--system", help="system prompt")
    parser.add_argument("--prompt", help="answer this one message and exit")
    parser.add_argument("--max-new-tokens", type=int, default=512)
    parser.add_argument("--temperature", type=float, default=0.7, help="0 decodes greedily")
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--seed", type=int)
    parser.set_defaults(handler=run)


def run(args) -> int:
    from tunesmith.infer.chat_cli import answer_once, chat_loop
    from tunesmith.infer.engine import GenerationSettings

    engine = engine_from_args(args)
    settings = GenerationSettings(
        max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p, seed=args.seed
    )
    if args.prompt is not None:
        answer_once(engine, args.prompt, args.system, settings)
        print()
        return 0
    chat_loop(engine, args.system, settings)
    return 0
