"""Flags generated from the schema: every field of a group is a flag with its description, default and choices;
list flags take both spellings; `chat --compare base` takes the --model itself."""

from __future__ import annotations

import pytest

from tunesmith.cli import build_parser
from tunesmith.config.fields import schema_fields
from tunesmith.config.schema import EvalConfig, ExportConfig


def _parse(*argv):
    return build_parser().parse_args(list(argv))


def _option(command: str, flag: str):
    subparsers = next(action for action in build_parser()._actions if action.dest == "command")
    parser = subparsers.choices[command].complete()  # its schema flags are added when it first parses
    return next(action for action in parser._actions if flag in action.option_strings)


@pytest.mark.parametrize("spelling", [["f16", "q8_0"], ["f16,q8_0"], ["f16", "--gguf", "q8_0"]])
def test_gguf_kinds_read_the_same_in_every_spelling(spelling):
    args = _parse("export", "--run", "runs/x", "--out", "exports/x", "--gguf", *spelling)
    assert args.gguf == ["f16", "q8_0"] and args.config is None and args.overrides == []


def test_a_wrong_gguf_kind_names_the_kinds(capsys):
    with pytest.raises(SystemExit):
        _parse("export", "--run", "r", "--gguf", "f16,q9")
    assert "--gguf: q9 is not one of f32, f16" in capsys.readouterr().err


@pytest.mark.parametrize("command, group, skipped", [("export", ExportConfig, ()),
                                                     ("eval", EvalConfig, ("benchmark_dir", "run", "adapter"))])
def test_every_field_of_the_group_is_a_flag_with_its_help_and_choices(command, group, skipped):
    """eval: --data sets benchmark_dir; --run and --adapter are the model flags every inference command shares."""
    for spec in schema_fields(group, prefix="group."):
        if spec.name in skipped:
            continue
        option = _option(command, f"--{spec.name.replace('_', '-')}")
        assert spec.description.replace("%", "%%") in (option.help or "")
        assert option.default is None  # unset flags leave the config file's value alone
        if spec.kind == "choice":
            assert tuple(option.choices) == spec.choices
        if not spec.required and spec.default not in (None, [], ""):
            assert f"(default: {spec.default})" in option.help


def test_flags_layer_over_the_config_values():
    from tunesmith.commands.export import _with_flags
    from tunesmith.commands.schema_flags import flag_values

    args = _parse("export", "--run", "r", "--no-ollama", "--dtype", "bf16")
    settings = _with_flags(ExportConfig(out="o", gguf=["q8_0"]), flag_values(args, args.export_flags))
    assert (settings.ollama, settings.dtype, settings.gguf, settings.out) == (False, "bf16", ["q8_0"], "o")


def test_eval_flags_become_the_eval_group():
    from tunesmith.commands.eval import _from_flags

    args = _parse("eval", "--model", "m", "--task", "mmlu", "--data", "bench", "--shots", "0", "--lang", "en")
    options, _, data, _ = _from_flags(args)
    assert (options.shots, options.lang, options.benchmark_dir, options.split, data) == (0, "en", "bench", "auto",
                                                                                         None)


def test_compare_base_is_the_model_itself(tiny_model_dir, capsys):
    from tunesmith.cli import main

    code = main(["chat", "--model", str(tiny_model_dir), "--prompt", "hi", "--temperature", "0",
                 "--max-new-tokens", "3", "--compare", "base", str(tiny_model_dir)])
    header = next(line for line in capsys.readouterr().out.splitlines() if "tokens]" in line)
    left, right = header.split(" | ")
    assert code == 0 and left.startswith("base [") and right.strip().startswith(f"{tiny_model_dir.name} [")


def test_compare_base_without_a_model_says_what_is_missing():
    from tunesmith.commands.chat import _compare_engines
    from tunesmith.errors import TunesmithError

    with pytest.raises(TunesmithError, match="--compare base is the --model itself"):
        _compare_engines(_parse("chat", "--compare", "base", "runs/x"))
