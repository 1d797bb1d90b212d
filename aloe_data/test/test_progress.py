"""aloe_data.progress: a long loop's bar written to a log is redrawn every half minute, not every step."""

import io
import itertools

from aloe_data.progress import LOG_INTERVAL_S, progress_bar


class Terminal(io.StringIO):
    def isatty(self):
        return True


def draws(file, steps: int = 1000, step_s: float = 0.2) -> list[str]:
    bar = progress_bar(range(steps), file=file, desc="policy (bc)", unit="step")
    clock = itertools.count(bar.start_t, step_s)  # every look at the clock: one training step later
    bar._time = lambda: next(clock)
    for _ in bar:
        pass
    bar.close()
    return [d for d in file.getvalue().replace("\n", "\r").split("\r") if d.strip()]


def test_a_bar_in_a_log_is_redrawn_every_half_minute_and_live_on_a_terminal():
    logged = draws(io.StringIO())  # a log file, 1000 steps of 0.2 s or more
    assert 2 <= len(logged) <= 2 + 1000 * 2 * 0.2 / LOG_INTERVAL_S, len(logged)
    assert "1000/1000" in logged[-1] and "policy (bc)" in logged[-1]
    assert len(draws(Terminal())) > 300  # on a terminal: as often as tqdm's 0.1 s allows
