"""The one "did you mean" helper behind every unknown-name error (registries, settings, config keys,
recipes, zoo models): :func:`difflib.get_close_matches` with its default cutoff (0.6), the closest
one only."""
from __future__ import annotations

import difflib
from typing import Iterable


def did_you_mean(name: str, known: Iterable[str], prefix: str = "") -> str:
    """``" (did you mean 'PREFIXclosest'?)"`` for the known name closest to ``name``, or ``""``.

    ``prefix`` is put before the suggestion (a config section such as ``"optim."``)."""
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {prefix + close[0]!r}?)" if close else ""
