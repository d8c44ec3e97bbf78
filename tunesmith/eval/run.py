"""`tunesmith eval`: load the model once, run the task, save the results as JSON and a table."""

from __future__ import annotations

from pathlib import Path

from tunesmith.config.schema import DataConfig, EvalConfig, ModelConfig
from tunesmith.errors import TunesmithError

BENCHMARKS = ("mmlu", "ceval", "cmmlu")


def run_eval(options: EvalConfig, model: ModelConfig | None, data: DataConfig | None = None,
             stage_kind: str = "sft", trust_remote_code: bool = False) -> dict:
    """Evaluate `options.run`, or `model` (+ `options.adapter`), as `options.task` says; returns the results."""
    if options.task not in BENCHMARKS and data is None:
        raise TunesmithError(f"task {options.task} needs a dataset: --data FILE, or --data DIR --dataset NAME")
    from transformers import set_seed

    from tunesmith.eval.report import save_results
    from tunesmith.infer.loader import load_engine

    if options.sampling.seed is not None:
        set_seed(options.sampling.seed)
    engine = load_engine(
        model.path if model and not options.run else None, options.adapter, options.run,
        model.template if model else None, model.gguf_file if model else None,
        trust_remote_code or (model.trust_remote_code if model else False),  # the user's flag or own config
    )
    out = Path(options.out) if options.out else default_out(options)
    results, table = _run_task(engine, options, data, stage_kind, out.parent)
    results["evaluated"] = {"run": options.run, "model": None if options.run else model.path, "adapter": options.adapter}
    save_results(results, table, out)
    print(table)
    print(f"results saved in {out} (table in {out.with_suffix('.txt')})")
    return results


def default_out(options: EvalConfig) -> Path:
    return (Path(options.run) if options.run else Path(".")) / "eval" / f"{options.task}.json"


def _run_task(engine, options: EvalConfig, data: DataConfig | None, stage_kind: str, out_dir: Path):
    from tunesmith.eval.report import benchmark_table, metrics_table

    if options.task in BENCHMARKS:
        from tunesmith.eval.multiple_choice import evaluate_benchmark

        results = evaluate_benchmark(engine, options.task, options.benchmark_dir, options.split, options.shots,
                                     options.lang, options.batch_size, options.max_samples)
        return results, benchmark_table(results)
    data = data.model_copy(update={"max_samples": options.max_samples or data.max_samples, "val_size": 0.0})
    if options.task == "predict":
        from tunesmith.data.dataset import load_records
        from tunesmith.eval.predict import evaluate_predictions

        from tunesmith.infer.settings import GenerationSettings

        # The global seed (above) drives the sampling, as before there was a per-request seed.
        settings = GenerationSettings(**options.sampling.model_dump(exclude={"seed"}))
        results = evaluate_predictions(engine, load_records(data), options.batch_size, settings, out_dir,
                                       _rewards(options))
        return results, metrics_table(f"predict ({results['samples']} samples)", results["metrics"])
    return _loss(engine, data, stage_kind, options)


def _rewards(options: EvalConfig) -> list:
    """The reward functions the user named for predict (their own files' code runs here, as they asked)."""
    if not options.rewards:
        return []
    from tunesmith.config.stage_kinds import GrpoStageConfig
    from tunesmith.train.rewards import build_rewards

    return build_rewards(GrpoStageConfig(reward_funcs=options.rewards), options.sampling.max_new_tokens)


def _loss(engine, data: DataConfig, stage_kind: str, options: EvalConfig):
    from tunesmith.data.dataset import prepare_data
    from tunesmith.eval.loss import evaluate_loss
    from tunesmith.eval.report import metrics_table
    from tunesmith.train.stages import get_stage

    stage = get_stage(stage_kind)
    prepared = prepare_data(data, lambda records: stage.encode_many(records, engine.template, data),
                            stage.record_kind, options.sampling.seed or 0)  # val_size 0: no split to seed
    results = evaluate_loss(engine.model, stage, prepared.train, engine.tokenizer.pad_token_id, options.batch_size)
    title = f"loss ({results['samples']} samples, {results['tokens']} target tokens)"
    metrics = {key: value for key, value in results.items() if key not in ("samples", "tokens", "seconds")}
    return results, metrics_table(title, metrics)
