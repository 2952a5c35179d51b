"""Progress reporting: tqdm bars on a terminal, timed log lines elsewhere (horovodrun, SLURM logs)."""
import io
import re

import pytest
from tqdm import tqdm

from utilities.errors import InputError
from utilities.progress import DEFAULT_INTERVAL, INTERVAL_VARIABLE, LogProgress, log_interval, progress


class Terminal(io.StringIO):
    def isatty(self):
        return True


class Clock:
    """A clock that advances ``step`` seconds every time it is read after the first."""

    def __init__(self, step):
        self.t, self.step, self.started = 0.0, step, False

    def __call__(self):
        if self.started:
            self.t += self.step
        self.started = True
        return self.t


LINE = re.compile(r"^epoch 1 train: (\d+)/10 steps \((\d+)%\), (\d+\.\d\d) steps/s, "
                  r"(elapsed (\S+), ETA (\S+)|done in (\S+))(, loss=\d\.\d{4})?$")


def test_log_mode_writes_a_line_per_interval_and_one_at_the_end():
    out = io.StringIO()
    bar = LogProgress(total=10, desc="epoch 1 train", file=out, interval=30, clock=Clock(10))
    for i in range(10):
        bar.set_postfix(loss=f"{1 / (i + 1):.4f}")
        bar.update()
    bar.close()
    bar.close()  # closing twice writes nothing more
    lines = out.getvalue().splitlines()
    # the clock reads 10, 20, ..., 100 s at the updates: lines at 30, 60 and 90 s, then the end
    assert len(lines) == 4
    matches = [LINE.match(line) for line in lines]
    assert all(matches), lines
    assert [int(m.group(1)) for m in matches] == [3, 6, 9, 10]
    assert [m.group(5) for m in matches[:3]] == ["30s", "1m00s", "1m30s"]
    assert [m.group(6) for m in matches[:3]] == ["1m10s", "40s", "10s"]  # (10 - n) steps at 0.10 step/s
    assert [m.group(3) for m in matches] == ["0.10", "0.10", "0.10", "0.09"]
    assert matches[-1].group(7) == "1m50s" and matches[-1].group(2) == "100"
    assert lines[-1].endswith("loss=0.1000")


def test_progress_picks_bars_on_a_terminal_and_lines_elsewhere(monkeypatch):
    monkeypatch.setenv(INTERVAL_VARIABLE, "1000")
    terminal, log = Terminal(), io.StringIO()
    assert list(progress(range(5), desc="chips", file=terminal)) == list(range(5))
    assert list(progress(range(5), desc="chips", unit="chip", file=log)) == list(range(5))
    assert isinstance(progress(total=1, file=terminal), tqdm)
    assert "\r" in terminal.getvalue() and "5/5" in terminal.getvalue()
    lines = log.getvalue().splitlines()
    assert len(lines) == 1 and re.match(r"^chips: 5/5 chips \(100%\), \d+\.\d\d chips/s, done in 0s$", lines[0])


def test_disabled_progress_is_silent():
    out = io.StringIO()
    with progress(total=3, file=out, disable=True) as bar:
        bar.update(3)
    assert out.getvalue() == ""


def test_a_loop_left_early_still_ends_its_stage():
    out = io.StringIO()
    for i in LogProgress(range(100), desc="validation", file=out, interval=1e9):
        if i == 4:
            break
    assert out.getvalue().splitlines()[0].startswith("validation: 4/100 steps (4%)")


def test_interval_from_argument_environment_or_default(monkeypatch):
    monkeypatch.delenv(INTERVAL_VARIABLE, raising=False)
    assert log_interval() == DEFAULT_INTERVAL == 30
    monkeypatch.setenv(INTERVAL_VARIABLE, "5")
    assert log_interval() == 5 and log_interval(2) == 2
    monkeypatch.setenv(INTERVAL_VARIABLE, "soon")
    with pytest.raises(InputError, match=r"^MANTIS_PROGRESS_SECONDS='soon' is not a number of seconds\.$"):
        log_interval()
    with pytest.raises(InputError, match="must be >= 0"):
        log_interval(-1)
