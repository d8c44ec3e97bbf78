"""What every part of the page shares: path checks, the runs folder, the job runner, the chat engine, texts."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tunesmith.config.schema import RunConfig
from tunesmith.webui.chat import ChatSession
from tunesmith.webui.i18n import Texts
from tunesmith.webui.jobs import JobRunner
from tunesmith.path_guard import PathGuard
from tunesmith.webui.schema_fields import FieldSpec, schema_fields


@dataclass
class WebuiContext:
    guard: PathGuard
    runs_dir: Path  # where training runs are created, one folder per run name
    jobs: JobRunner
    texts: Texts
    chat: ChatSession = field(default_factory=ChatSession)
    specs: list[FieldSpec] = field(default_factory=lambda: schema_fields(RunConfig))

    @classmethod
    def create(cls, runs_dir: str | Path = "runs", allowed_roots: list[str] | None = None) -> "WebuiContext":
        guard = PathGuard(allowed_roots)
        runs = guard.writable(str(runs_dir), "runs folder")
        runs.mkdir(exist_ok=True)
        return cls(guard, runs, JobRunner(guard.base), Texts.load())
