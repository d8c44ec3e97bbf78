"""What the page shows of the current job: a progress bar, the log tail and the loss chart."""

from __future__ import annotations

import html

from tunesmith.webui.context import WebuiContext
from tunesmith.webui.runs import loss_points, progress_of

LOG_LINES = 40


def job_view(ctx: WebuiContext, lang: str):
    """(progress HTML, log tail, chart rows as a DataFrame or None) for the job running or last run."""
    import pandas as pd

    job = ctx.jobs.job
    rows = loss_points(job.run_dir if job else None)
    # No data is sent as None, not an empty table: the chart fixes its axis types and colours from the first
    # table it draws, and an empty one has neither.
    points = pd.DataFrame(rows).astype({"step": "int64", "loss": "float64", "series": "str"}) if rows else None
    if job is None:
        return "", "", points
    log = job.log.tail(LOG_LINES)
    state = ctx.texts.text(f"state_{job.state()}", lang)
    progress = progress_of(log)
    bar = ""
    if progress:
        done, total = progress
        bar = f'<progress value="{done}" max="{total}" style="width:60%"></progress> {done}/{total} · '
    title = html.escape(f"{job.kind} · {state}")
    return f'<div id="job-state" data-kind="{job.kind}" data-state="{job.state()}">{bar}{title}</div>', log, points
