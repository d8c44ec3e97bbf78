"""`tunesmith export`: a trained run in, a deployable folder out, top to bottom.

Everything is written into a hidden staging folder beside the destination and renamed into place at the
end, so a failed or interrupted export never leaves a half-written folder where the export should be.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tunesmith.config.schema import ExportConfig, RunConfig
from tunesmith.errors import TunesmithError
from tunesmith.model.value_head import VALUE_HEAD_FILE
from tunesmith.run_folder import read_run_config


GGUF_DIR = "gguf"


@dataclass
class ExportReport:
    folder: Path
    files: dict[str, int] = field(default_factory=dict)  # file name -> bytes
    seconds: dict[str, float] = field(default_factory=dict)  # step -> wall time

    def summary(self) -> str:
        steps = ", ".join(f"{step} {secs:.1f}s" for step, secs in self.seconds.items())
        return f"exported to {self.folder} ({steps})"


def export_run(run_dir: str | Path, settings: ExportConfig, progress: bool = True,
               trust_remote_code: bool = False) -> ExportReport:
    from tunesmith.data.template import ChatTemplate
    from tunesmith.export.card import write_model_card
    from tunesmith.export.gguf_file import write_gguf
    from tunesmith.export.hf_folder import save_generation_config, save_model, save_tokenizer
    from tunesmith.export.merge import export_dtype, merged_model
    from tunesmith.export.ollama import measure_turn_format, write_modelfile
    from tunesmith.model.load import resolve_source
    from tunesmith.model.vision import save_processor_files

    run_dir = Path(run_dir)
    config = read_run_config(run_dir, named_by="--run / export.run", trust_remote_code=trust_remote_code,
                             how="pass --trust-remote-code to export (or set model.trust_remote_code in CONFIG)")
    out = _destination(settings, run_dir)
    base_location = resolve_source(config.model).location
    tokenizer = _run_tokenizer(run_dir)
    value_head = run_dir / VALUE_HEAD_FILE  # only a reward model (rm run) has one
    if settings.gguf and value_head.is_file():
        raise TunesmithError(f"{run_dir} is a reward model: GGUF holds language models and would drop its score "
                             "head; export it without export.gguf (merged weights keep the head)")
    if settings.gguf:
        _check_gguf_support(run_dir, base_location, tokenizer)  # fail now, not after the slow merge
    template = ChatTemplate(tokenizer)  # the run's tokenizer carries the template it trained with
    stop_ids = template.stop_token_ids()
    if settings.gguf and settings.ollama:
        measure_turn_format(template)  # an untranslatable template fails now, not after the slow merge
    report = ExportReport(out)
    with _staged(out) as staging:
        with _timer(report, "merge"):
            model = merged_model(run_dir, config, progress)
        with _timer(report, "save"):
            save_model(model, staging, export_dtype(settings.dtype, base_location), settings.max_shard_size)
            save_tokenizer(tokenizer, template.source, staging)
            save_processor_files(base_location, staging)
            save_generation_config(model, base_location, stop_ids, tokenizer, staging)
            if value_head.is_file():  # the head reads the last hidden state, which merging leaves unchanged
                shutil.copy2(value_head, staging / VALUE_HEAD_FILE)
        del model  # the GGUF writer streams from the saved shards
        # GGUF files get their own folder: transformers, given `gguf_file=` in a folder that also holds a
        # tokenizer_config.json, mixes the two and loses the special tokens.
        gguf_dir = staging / GGUF_DIR
        for kind in settings.gguf:
            gguf_dir.mkdir(exist_ok=True)
            with _timer(report, f"gguf {kind}"):
                write_gguf(staging, gguf_dir / f"model-{kind}.gguf", kind, tokenizer, template.source, stop_ids,
                           out.name, progress)
        if settings.gguf and settings.ollama:
            write_modelfile(gguf_dir, f"model-{settings.gguf[0]}.gguf", template, stop_ids)
        write_model_card(staging, out.name, run_dir, config, _file_sizes(staging))
        report.files = _file_sizes(staging)
    return report


def _file_sizes(folder: Path) -> dict[str, int]:
    return {path.relative_to(folder).as_posix(): path.stat().st_size for path in folder.rglob("*") if path.is_file()}


def _destination(settings: ExportConfig, run_dir: Path) -> Path:
    if not settings.out:
        raise TunesmithError("say where to export: --out DIR or export.out")
    out = Path(settings.out)
    if out.exists() and not out.is_dir():
        raise TunesmithError(f"export.out {out} is a file; choose a folder")
    if run_dir.resolve() == out.resolve() or out.resolve() in run_dir.resolve().parents:
        raise TunesmithError(f"export.out {out} would replace the run folder {run_dir}; choose another folder")
    if out.is_dir() and any(out.iterdir()) and not settings.overwrite:
        raise TunesmithError(
            f"export folder {out} already holds files; set export.overwrite=true (--overwrite) to replace it "
            "or choose another folder"
        )
    return out


def _check_gguf_support(run_dir: Path, base_location: str, tokenizer) -> None:
    """Architecture, vocabulary and every tensor name, checked on the run or base folder before merging."""
    from transformers import AutoConfig

    from tunesmith.export.gguf_arch import gguf_architecture
    from tunesmith.export.gguf_tensors import TensorSource, tensor_plan
    from tunesmith.export.gguf_vocab import check_vocab

    from tunesmith.model.vision import vision_model_type

    folder = run_dir if (run_dir / "config.json").is_file() else Path(base_location)
    if vision_model_type(folder) or vision_model_type(base_location):
        raise TunesmithError("GGUF export of a vision-language model is not supported: llama.cpp keeps the vision "
                             "tower in a separate mmproj file, which tunesmith does not write; export without "
                             "export.gguf (the merged folder keeps the tower) and convert that with llama.cpp's "
                             "convert_hf_to_gguf.py (once for the model, once with --mmproj)")
    arch = gguf_architecture(AutoConfig.from_pretrained(folder))
    check_vocab(tokenizer, arch.config.vocab_size)
    if any(folder.glob("*.safetensors")):  # a hub id is checked when the merged folder is written
        tensor_plan(arch, TensorSource(folder))


def _run_tokenizer(run_dir: Path):
    from transformers import AutoTokenizer

    if not (run_dir / "tokenizer_config.json").is_file():
        raise TunesmithError(f"{run_dir} holds no tokenizer; did the run finish?")
    return AutoTokenizer.from_pretrained(str(run_dir))


@contextmanager
def _staged(out: Path):
    """A staging folder that replaces `out` when the block succeeds and vanishes when it fails."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        yield staging
        staging.chmod(0o755)  # mkdtemp makes it private; the export is meant to be shared
        if out.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            out.rename(retired / out.name)
            staging.rename(out)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextmanager
def _timer(report: ExportReport, step: str):
    start = time.perf_counter()
    yield
    report.seconds[step] = time.perf_counter() - start
