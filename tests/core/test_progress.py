"""The progress bar: drawn with rate and ETA on a terminal, quiet in a log; notes always printed."""
from __future__ import annotations

import io
import sys

from transfer.progress import Progress


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bar_on_a_terminal_shows_position_rate_eta_and_metrics(monkeypatch):
    err = _Tty()
    monkeypatch.setattr(sys, "stderr", err)
    bar = Progress(10, start=2, unit="step", desc="simclr/loss")
    for n in range(3, 8):
        bar.update(n, loss=1.25)
    bar.note("epoch 0.70: k-NN top-1 50.00%")
    bar.close()
    out = err.getvalue()
    assert bar.n == 7
    assert "simclr/loss" in out and "7/10" in out and "step/s" in out and "loss=1.25" in out
    assert "<" in out.split("7/10")[-1]  # tqdm's "elapsed<remaining" ETA field after the position
    assert "epoch 0.70: k-NN top-1 50.00%\n" in out


def test_quiet_off_a_terminal_but_notes_still_print(monkeypatch):
    err = io.StringIO()  # a log file or a pipe
    monkeypatch.setattr(sys, "stderr", err)
    bar = Progress(10, unit="step", desc="d")
    bar.update(5, loss=1.0)
    bar.note("a note")
    bar.close()
    assert err.getvalue() == "a note\n" and bar.n == 5


def test_disabled_prints_nothing(monkeypatch):
    err = _Tty()
    monkeypatch.setattr(sys, "stderr", err)
    bar = Progress(10, enabled=False)
    bar.update(3)
    bar.note("x")
    bar.close()
    assert err.getvalue() == ""
