"""`tunesmith eval CONFIG [key=value ...]`, or `tunesmith eval --model PATH|--run RUN_DIR --task TASK --data ...`"""

from __future__ import annotations

from tunesmith.commands.options import add_model_arguments
from tunesmith.commands.schema_flags import add_group_flags, flag_values, merged

MODEL_FLAGS = ("run", "adapter")  # eval fields whose flags add_model_arguments defines, with the same meaning
BENCHMARKS = ("mmlu", "ceval", "cmmlu")


def register(subparsers) -> None:
    parser = subparsers.add_parser("eval", help="score a model on a benchmark, generation metrics or loss")
    parser.add_argument("config", nargs="?", help="YAML config with an eval: group (flags below override it)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. eval.shots=0")
    add_model_arguments(parser)
    parser.add_argument("--data", help="benchmark folder (mmlu/ceval/cmmlu), or a dataset file or folder")
    parser.add_argument("--dataset", help="predict/loss: dataset name(s) in --data's dataset_info.json")
    parser.set_defaults(handler=run)
    parser.defer(_add_eval_flags)


def _add_eval_flags(parser) -> None:
    from tunesmith.config.schema import DataConfig, EvalConfig

    eval_flags = add_group_flags(parser, EvalConfig, exclude=("benchmark_dir", *MODEL_FLAGS))  # --data sets it
    add_group_flags(parser, DataConfig, only=("max_length",))
    parser.set_defaults(eval_flags=eval_flags)


def run(args) -> int:
    from tunesmith.eval.run import run_eval

    options, model, data, stage = _from_config(args) if args.config else _from_flags(args)
    run_eval(options, model, data, stage, args.trust_remote_code)  # a run folder never grants it itself
    return 0


def _flag_values(args) -> dict:
    model_flags = {name: getattr(args, name) for name in MODEL_FLAGS if getattr(args, name) is not None}
    return {**flag_values(args, args.eval_flags), **model_flags}


def _from_config(args):
    from tunesmith.config import load_config
    from tunesmith.config.schema import EvalConfig
    from tunesmith.errors import TunesmithError

    if args.model:
        raise TunesmithError("give either CONFIG or --model, not both; set model.path in the config instead")
    config = load_config(args.config, args.overrides)
    if config.eval is None and args.task is None:
        raise TunesmithError(f"{args.config} has no eval: group; add one (eval: {{task: mmlu, ...}}) or pass --task")
    values = merged(config.eval.model_dump() if config.eval else {}, _flag_values(args))
    if args.data or args.dataset:
        if values.get("task") not in BENCHMARKS or args.dataset:
            raise TunesmithError("with a CONFIG, predict and loss read the config's data group; set data.datasets "
                                 "there instead of --data / --dataset")
        values["benchmark_dir"] = args.data
    options = _validated(EvalConfig, values)
    return options, config.model, config.data, config.stage.kind


def _from_flags(args):
    from tunesmith.config.schema import DataConfig, EvalConfig, ModelConfig
    from tunesmith.errors import TunesmithError

    if not args.task:
        raise TunesmithError("say what to evaluate: --task mmlu|ceval|cmmlu|predict|loss (or give a CONFIG)")
    benchmark = args.task in BENCHMARKS
    options = _validated(EvalConfig, {**_flag_values(args), "benchmark_dir": args.data if benchmark else None})
    model = None
    if args.model:
        model = _validated(ModelConfig, {"path": args.model, "gguf_file": args.gguf_file,
                                         "template": args.template or "auto",
                                         "trust_remote_code": args.trust_remote_code})
    data = None
    if not benchmark and args.data:
        fields = {"datasets": args.dataset or args.data, "dataset_dir": args.data if args.dataset else "."}
        if args.max_length:
            fields["max_length"] = args.max_length
        data = _validated(DataConfig, fields)
    return options, model, data, "sft"


def _validated(group, values: dict):
    from pydantic import ValidationError

    from tunesmith.errors import TunesmithError

    try:
        return group.model_validate(values)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or group.__name__}: {e['msg']}" for e in err.errors())
        raise TunesmithError(f"eval options: {problems}") from None
