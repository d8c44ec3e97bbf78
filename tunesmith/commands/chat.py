"""`tunesmith chat`: interactive streaming chat, one answer with --prompt, or several models side by side
with --compare."""

from tunesmith.commands.options import add_model_arguments, engine_from_args
from tunesmith.commands.schema_flags import add_group_flags, flag_values

BASE = "base"  # in --compare: the --model itself (with its --gguf-file), untrained


def register(subparsers) -> None:
    parser = subparsers.add_parser("chat", help="chat with a model in the terminal")
    add_model_arguments(parser)
    parser.add_argument("--compare", nargs="+", metavar="MODEL_OR_RUN",
                        help=f"answer with each of these side by side: run folders, model folders, adapter folders "
                        f"(applied on --model), or the word {BASE} for --model itself (a folder named {BASE}: "
                        f"./{BASE})")
    parser.add_argument("--system", help="system prompt")
    parser.add_argument("--prompt", help="answer this one message and exit")
    parser.add_argument("--image", action="append", default=[], metavar="PATH",
                        help="an image for the first message (repeatable; vision-language models such as Qwen2-VL)")
    parser.set_defaults(handler=run)
    parser.defer(_add_sampling_flags)


def _add_sampling_flags(parser) -> None:
    from tunesmith.infer.settings import GenerationSettings

    parser.set_defaults(sampling_flags=add_group_flags(parser, GenerationSettings, exclude=("stop",)))


def run(args) -> int:
    from tunesmith.infer.chat_cli import answer_once, chat_loop
    from tunesmith.infer.compare_cli import compare_loop, compare_turn
    from tunesmith.infer.settings import GenerationSettings

    settings = GenerationSettings(**flag_values(args, args.sampling_flags))
    if args.compare:
        engines = _compare_engines(args)
        if args.prompt is not None:
            print(compare_turn(engines, {name: _system(args) for name, _ in engines}, args.prompt, settings))
            return 0
        compare_loop(engines, args.system, settings)
        return 0
    engine = engine_from_args(args)
    if args.prompt is not None:
        answer_once(engine, args.prompt, args.system, settings, args.image)
        return 0
    chat_loop(engine, args.system, settings, images=args.image)
    return 0


def _system(args) -> list[dict]:
    return [{"role": "system", "content": args.system}] if args.system else []


def _compare_engines(args) -> list[tuple[str, object]]:
    """(name, engine) for each --compare entry: a run folder, an adapter on --model, or a model."""
    from pathlib import Path

    from tunesmith.errors import TunesmithError
    from tunesmith.infer.loader import load_engine
    from tunesmith.run_folder import is_adapter, is_run_folder

    if len(args.compare) < 2:
        raise TunesmithError("--compare needs at least two models, adapters or runs")
    engines = []
    for spec in args.compare:
        folder = Path(spec)
        common = dict(template=args.template, trust_remote_code=args.trust_remote_code, backend=args.backend)
        if spec == BASE:
            if not args.model:
                raise TunesmithError(f"--compare {BASE} is the --model itself; say which model with --model")
            engine = load_engine(model=args.model, gguf_file=args.gguf_file, **common)
        elif is_run_folder(folder):
            engine = load_engine(run=spec, **common)
        elif is_adapter(folder):
            if not args.model:
                raise TunesmithError(f"{spec} is an adapter; say which base model it applies to with --model")
            engine = load_engine(model=args.model, adapter=spec, gguf_file=args.gguf_file, **common)
        else:
            engine = load_engine(model=spec, **common)
        engines.append((folder.name or spec, engine))
    return engines
