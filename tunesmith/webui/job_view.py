"""What the page shows of the current job: a progress bar, the log tail and the loss chart."""

from __future__ import annotations

import html

from tunesmith.webui.context import WebuiContext
from tunesmith.webui.runs import loss_points, progress_of

LOG_LINES = 40


def job_view(ctx: WebuiContext, lang: str):
    """(progress HTML, log tail, chart rows as a DataFrame) for the job the server is running or last ran."""
    import pandas as pd

    job = ctx.jobs.job
    # Typed even when empty: the chart takes its axis types (numeric, not categories) from the columns.
    points = pd.DataFrame(loss_points(job.run_dir if job else None), columns=["step", "loss", "series"]).astype(
        {"step": "int64", "loss": "float64", "series": "str"})
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
