"""`tunesmith export --run RUN_DIR --out DIR [--gguf f16,q8_0]` or `tunesmith export CONFIG [key=value ...]`"""

from __future__ import annotations

GGUF_KINDS = "f32, f16, bf16, q8_0, q6_k, q5_k_m, q5_k_s, q4_k_m, q4_k_s, q5_1, q5_0, q4_1, q4_0"


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "export", help="merge a trained run and write it for deployment (safetensors, GGUF, Ollama)"
    )
    parser.add_argument("config", nargs="?", help="YAML config whose `export` group (and train.output_dir) say "
                        "what to export; or use --run")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. export.gguf=q8_0")
    parser.add_argument("--run", help="run folder to export (its config.yaml says the base model)")
    parser.add_argument("--out", help="folder to write the export to")
    parser.add_argument("--gguf", help=f"GGUF kinds to write, comma-separated: {GGUF_KINDS}")
    parser.add_argument("--max-shard-size", help="largest safetensors shard, e.g. 5GB (default) or 2GiB")
    parser.add_argument("--dtype", choices=["auto", "fp32", "bf16", "fp16"], help="dtype of the merged weights")
    parser.add_argument("--overwrite", action="store_true", default=None, help="replace a non-empty --out folder")
    parser.add_argument("--no-ollama", dest="ollama", action="store_false", default=None,
                        help="skip the Ollama Modelfile")
    parser.set_defaults(handler=run)


def run(args) -> int:
    from pathlib import Path

    from tunesmith.config import load_config
    from tunesmith.errors import TunesmithError
    from tunesmith.export.pipeline import export_run, read_run_config

    if args.config:
        config = load_config(args.config, args.overrides)
        run_dir = Path(args.run or config.export.run or config.train.output_dir)
    elif args.run:
        if args.overrides:
            raise TunesmithError("KEY=VALUE overrides need a CONFIG; with --run use the --out/--gguf/... options")
        run_dir = Path(args.run)
        config = read_run_config(run_dir)
    else:
        raise TunesmithError("say what to export: tunesmith export CONFIG, or tunesmith export --run RUN_DIR --out DIR")
    flags = {"out": args.out, "gguf": args.gguf, "max_shard_size": args.max_shard_size, "dtype": args.dtype,
             "overwrite": args.overwrite, "ollama": args.ollama}
    settings = _with_flags(config.export, {key: value for key, value in flags.items() if value is not None})
    report = export_run(run_dir, settings)
    print(report.summary())
    return 0


def _with_flags(settings, flags: dict):
    """The export group with command-line flags applied, validated like the config file."""
    from pydantic import ValidationError

    from tunesmith.config.schema import ExportConfig
    from tunesmith.errors import TunesmithError

    try:
        return ExportConfig.model_validate({**settings.model_dump(), **flags})
    except ValidationError as err:
        problems = "; ".join(f"--{str(e['loc'][0]).replace('_', '-')}: {e['msg']}" for e in err.errors())
        raise TunesmithError(problems) from None
