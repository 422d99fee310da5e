"""A dependency-free progress bar with rate and ETA (one line, redrawn on a TTY; periodic
lines otherwise, so logs stay readable)."""
from __future__ import annotations

import sys
import time


def _fmt(sec: float) -> str:
    sec = int(max(0, sec))
    h, r = divmod(sec, 3600)
    m, s = divmod(r, 60)
    return f"{h:d}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class Progress:
    def __init__(self, total: int, start: int = 0, enabled: bool = True, unit: str = "it", desc: str = "",
                 every_s: float = 10.0) -> None:
        self.total, self.start, self.enabled, self.unit, self.desc = total, start, enabled, unit, desc
        self.t0 = time.time()
        self.tty = sys.stderr.isatty()
        self.every_s, self.last_print = every_s, 0.0
        self.n = start

    def update(self, n: int, **info: float) -> None:
        self.n = n
        if not self.enabled:
            return
        now = time.time()
        if not self.tty and now - self.last_print < self.every_s and n < self.total:
            return
        self.last_print = now
        done = n - self.start
        rate = done / max(now - self.t0, 1e-9)
        eta = (self.total - n) / rate if rate > 0 else float("inf")
        frac = n / max(1, self.total)
        bar = "#" * int(frac * 24)
        extra = " ".join(f"{k}={v:.4f}" for k, v in info.items())
        line = (f"{self.desc} [{bar:<24}] {n}/{self.total} {rate:.2f} {self.unit}/s "
                f"elapsed {_fmt(now - self.t0)} eta {_fmt(eta) if eta != float('inf') else '?'} {extra}")
        if self.tty:
            sys.stderr.write("\r" + line[:160].ljust(160))
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def note(self, msg: str) -> None:
        if self.enabled:
            sys.stderr.write(("\n" if self.tty else "") + msg + "\n")
            sys.stderr.flush()

    def close(self) -> None:
        if self.enabled and self.tty:
            sys.stderr.write("\n")
            sys.stderr.flush()
