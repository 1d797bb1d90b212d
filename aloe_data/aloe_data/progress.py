"""Progress bars for long work (training steps, bags, episodes): tqdm, redrawn as time passes on a terminal, and at
most every ``LOG_INTERVAL_S`` seconds when written anywhere else (a log file, CI, ``nohup``), so a long job's log grows
by a line per half minute, not by a line per step."""

from __future__ import annotations

import sys

LOG_INTERVAL_S = 30.0


def is_terminal(file) -> bool:
    """Whether ``file`` is a terminal (a bar there may redraw as time passes)."""
    return bool(getattr(file, "isatty", lambda: False)())


def progress_bar(iterable=None, file=None, **kwargs):
    """``tqdm(iterable, **kwargs)`` writing to ``file`` (stderr by default), throttled there unless it is a terminal."""
    from tqdm import tqdm

    file = sys.stderr if file is None else file
    kwargs.setdefault("mininterval", 0.1 if is_terminal(file) else LOG_INTERVAL_S)
    kwargs.setdefault("maxinterval", max(10.0, kwargs["mininterval"]))
    return tqdm(iterable, file=file, **kwargs)
