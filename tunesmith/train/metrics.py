"""Where metrics go: metrics.jsonl in the run folder (one object per record), plus any extra sinks."""

from __future__ import annotations

import json
from pathlib import Path

from tunesmith.run_folder import METRICS_FILE, read_metrics


class MetricsLog:
    """metrics.jsonl, and every sink in `sinks` (objects with write(record, step) and close())."""

    def __init__(self, run_dir: Path, enabled: bool = True, sinks: list | None = None):
        self.path = Path(run_dir) / METRICS_FILE
        self.enabled = enabled
        self.sinks = sinks or []

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        for sink in self.sinks:
            sink.write(record, record["step"])

    def truncate_after(self, step: int) -> None:
        """Drop records past `step`: a resumed run rewrites the steps it repeats instead of listing them twice."""
        if not self.enabled or not self.path.is_file():
            return
        kept = [record for record in read_metrics(self.path.parent) if record["step"] <= step]
        self.path.write_text("".join(json.dumps(record) + "\n" for record in kept), encoding="utf-8")

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()

