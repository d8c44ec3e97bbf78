"""`tunesmith export --run RUN_DIR --out DIR [--gguf f16 q8_0]` or `tunesmith export CONFIG [key=value ...]`

The flags are the export group of the schema (config/schema.py ExportConfig), generated.
"""

from __future__ import annotations

from tunesmith.commands.schema_flags import add_group_flags, flag_values


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "export", help="merge a trained run and write it for deployment (safetensors, GGUF, Ollama)"
    )
    parser.add_argument("config", nargs="?", help="YAML config whose `export` group (and train.output_dir) say "
                        "what to export; or use --run")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. export.gguf=q8_0")
    parser.add_argument("--trust-remote-code", action="store_true", default=False,
                        help="run Python code shipped with the run's base model (never taken from the run folder)")
    parser.set_defaults(handler=run)
    parser.defer(_add_export_flags)


def _add_export_flags(parser) -> None:
    from tunesmith.config.schema import ExportConfig

    parser.set_defaults(export_flags=add_group_flags(parser, ExportConfig))


def run(args) -> int:
    from pathlib import Path

    from tunesmith.config import load_config
    from tunesmith.errors import TunesmithError
    from tunesmith.export.pipeline import export_run
    from tunesmith.run_folder import read_run_config

    if args.config:
        config = load_config(args.config, args.overrides)
        run_dir = Path(args.run or config.export.run or config.train.output_dir)
    elif args.run:
        if args.overrides:
            raise TunesmithError("KEY=VALUE overrides need a CONFIG; with --run use the --out/--gguf/... options")
        run_dir = Path(args.run)
        config = read_run_config(run_dir, named_by="--run", trust_remote_code=args.trust_remote_code,
                                 how="pass --trust-remote-code to export")
    else:
        raise TunesmithError("say what to export: tunesmith export CONFIG, or tunesmith export --run RUN_DIR --out DIR")
    flags = {key: value for key, value in flag_values(args, args.export_flags).items() if key != "run"}
    settings = _with_flags(config.export, flags)
    trust = args.trust_remote_code or (bool(args.config) and config.model.trust_remote_code)  # the user's own say
    report = export_run(run_dir, settings, trust_remote_code=trust)
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
