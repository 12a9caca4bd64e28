"""Progress: its measures from a fake clock, the bar on a terminal, the periodic plain line."""

from __future__ import annotations

import io

from gradsurgery.runtime.runlog import Progress, _fmt_duration


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_durations() -> None:
    assert _fmt_duration(None) == "…"
    assert _fmt_duration(59.6) == "1:00"
    assert _fmt_duration(3 * 3600 + 5 * 60 + 7) == "3:05:07"


def test_rates_are_unknown_until_measurable_then_from_the_progress_itself() -> None:
    clock, out = Clock(), io.StringIO()
    p = Progress(
        1000, initial=400, desc="mt10 sac", rates={"env-steps": 10}, stream=out, clock=clock
    )
    # a resumed run: the 400 earlier steps count for neither the rate nor the elapsed time
    assert out.getvalue() == (
        "mt10 sac: 400/1,000 steps (40.0%) | … steps/s, … env-steps/s | elapsed 0:00 | ETA …\n"
    )
    clock.t += 0.5
    p.update(5)
    assert p.rate() is None and p.eta() is None  # under a second
    clock.t += 1.5
    p.update(15)  # 20 steps in 2 s
    assert p.rate() == 10.0 and p.average_rate() == 10.0
    assert p.eta() == (1000 - 420) / 10.0
    text = p.format()
    assert (
        "420/1,000 steps (42.0%) | 10.0 steps/s, 100 env-steps/s | elapsed 0:02 | ETA 0:58" in text
    )


def test_the_rate_follows_a_moving_window() -> None:
    clock = Clock()
    p = Progress(10_000, window=10.0, enabled=False, clock=clock)
    for _ in range(20):  # 100 steps/s for 20 s
        clock.t += 1.0
        p.update(100)
    for _ in range(20):  # then 10 steps/s
        clock.t += 1.0
        p.update(10)
    assert p.rate() == 10.0  # the window holds only the slow part
    assert p.average_rate() == (2000 + 200) / 40.0  # the session average does not


def test_a_stall_reads_zero_after_a_full_window_not_before() -> None:
    clock = Clock()
    p = Progress(100, window=5.0, enabled=False, clock=clock)
    clock.t += 3.0
    p.update(0)
    assert p.rate() is None
    clock.t += 3.0
    p.update(0)
    assert p.rate() == 0.0 and p.eta() is None


def test_plain_line_every_period_when_not_a_terminal() -> None:
    clock, out = Clock(), io.StringIO()
    p = Progress(100, unit="runs", every=30.0, stream=out, clock=clock)
    for _ in range(10):  # a run every 10 s
        clock.t += 10.0
        p.update(1, postfix="last: sum seed 0")
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 + 3  # the start, then at 30, 60, 90 s
    assert lines[-1] == (
        "9/100 runs (9.0%) | 0.1 runs/s | elapsed 1:30 | ETA 15:10 | last: sum seed 0"
    )
    clock.t += 5.0
    p.update(1)
    p.close()  # the last state, once
    assert out.getvalue().splitlines()[-1].startswith("11/100 runs (11.0%)")
    assert "\r" not in out.getvalue()
    p.update(1)
    assert len(out.getvalue().splitlines()) == 5  # closed: silent


def test_bar_on_a_terminal_redraws_in_place_and_is_cleared() -> None:
    clock, out = Clock(), Tty()
    p = Progress(50, desc="pcgrad seed 0", stream=out, clock=clock, refresh=0.5)
    assert out.getvalue() == ""  # nothing before the first update
    clock.t += 2.0
    p.update(10)
    p.update(1)  # within the refresh interval: not redrawn
    drawn = out.getvalue()
    assert drawn.startswith("\r[####................] pcgrad seed 0: 10/50 steps (20.0%)")
    assert "5.0 steps/s | elapsed 0:02 | ETA 0:08" in drawn and drawn.endswith("\x1b[K")
    assert "\n" not in drawn
    p.write("a message")
    assert "\r\x1b[Ka message\n\r[" in out.getvalue()
    p.close()
    assert out.getvalue().endswith("\r\x1b[K")


def test_disabled_writes_nothing() -> None:
    out = Tty()
    p = Progress(10, enabled=False, stream=out)
    p.update(10)
    p.write("x")
    p.close()
    assert out.getvalue() == "" and p.n == 10
