"""The progress bar of the trainer and the task engines: a thin wrapper of ``tqdm`` (rate, ETA,
redrawn in place) that takes absolute positions (a resumed run starts at its step) and named
metrics. The bar is drawn only when its stream (stderr) is a terminal: in a log file or a pipe it
stays quiet, and the run's numbers are in ``log.jsonl``. :meth:`Progress.note` lines (e.g. the
k-NN monitor) are printed either way, above the bar."""
from __future__ import annotations

import sys

from tqdm import tqdm


class Progress:
    def __init__(self, total: int, start: int = 0, enabled: bool = True, unit: str = "it", desc: str = "") -> None:
        self.enabled, self._n = enabled, start
        # disable=None: tqdm turns itself off when the stream is not a terminal
        self.bar = tqdm(total=total, initial=start, unit=unit, desc=desc, file=sys.stderr,
                        disable=None if enabled else True, dynamic_ncols=True, leave=True)

    @property
    def n(self) -> int:
        return self._n

    def update(self, n: int, **info: float) -> None:
        """Move the bar to position ``n`` and show ``info`` (e.g. ``loss=...``) beside it."""
        self._n = n
        if self.bar.disable:
            return
        if info:
            self.bar.set_postfix({k: f"{v:.4g}" for k, v in info.items()}, refresh=False)
        self.bar.update(n - self.bar.n)

    def note(self, msg: str) -> None:
        """One line of text, printed above the bar (also when the bar itself is off)."""
        if self.enabled:
            tqdm.write(msg, file=sys.stderr)

    def close(self) -> None:
        self.bar.close()
