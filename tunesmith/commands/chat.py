"""`tunesmith chat`: interactive streaming chat, one answer with --prompt, or several models side by side
with --compare."""

from tunesmith.commands.options import add_model_arguments, engine_from_args


def register(subparsers) -> None:
    parser = subparsers.add_parser("chat", help="chat with a model in the terminal")
    add_model_arguments(parser)
    parser.add_argument("--compare", nargs="+", metavar="MODEL_OR_RUN",
                        help="answer with each of these side by side: run folders, model folders, or adapter "
                        "folders (applied on --model)")
    parser.add_argument("--system", help="system prompt")
    parser.add_argument("--prompt", help="answer this one message and exit")
    parser.add_argument("--max-new-tokens", type=int, default=512)
    parser.add_argument("--temperature", type=float, default=0.7, help="0 decodes greedily")
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=0, help="0: no limit")
    parser.add_argument("--repetition-penalty", type=float, default=1.0)
    parser.add_argument("--seed", type=int)
    parser.set_defaults(handler=run)


def run(args) -> int:
    from tunesmith.infer.chat_cli import answer_once, chat_loop
    from tunesmith.infer.compare_cli import compare_loop, compare_turn
    from tunesmith.infer.engine import GenerationSettings

    settings = GenerationSettings(
        max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
        repetition_penalty=args.repetition_penalty, seed=args.seed,
    )
    if args.compare:
        engines = _compare_engines(args)
        if args.prompt is not None:
            print(compare_turn(engines, {name: _system(args) for name, _ in engines}, args.prompt, settings))
            return 0
        compare_loop(engines, args.system, settings)
        return 0
    engine = engine_from_args(args)
    if args.prompt is not None:
        answer_once(engine, args.prompt, args.system, settings)
        return 0
    chat_loop(engine, args.system, settings)
    return 0


def _system(args) -> list[dict]:
    return [{"role": "system", "content": args.system}] if args.system else []


def _compare_engines(args) -> list[tuple[str, object]]:
    """(name, engine) for each --compare entry: a run folder, an adapter on --model, or a model."""
    from pathlib import Path

    from tunesmith.errors import TunesmithError
    from tunesmith.infer.loader import load_engine
    from tunesmith.model.save import is_adapter_folder
    from tunesmith.train.run import CONFIG_FILE

    if len(args.compare) < 2:
        raise TunesmithError("--compare needs at least two models, adapters or runs")
    engines = []
    for spec in args.compare:
        folder = Path(spec)
        common = dict(template=args.template, trust_remote_code=args.trust_remote_code, backend=args.backend)
        if (folder / CONFIG_FILE).is_file():
            engine = load_engine(run=spec, **common)
        elif is_adapter_folder(folder):
            if not args.model:
                raise TunesmithError(f"{spec} is an adapter; say which base model it applies to with --model")
            engine = load_engine(model=args.model, adapter=spec, gguf_file=args.gguf_file, **common)
        else:
            engine = load_engine(model=spec, **common)
        engines.append((folder.name or spec, engine))
    return engines
