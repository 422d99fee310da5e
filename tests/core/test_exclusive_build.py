"""``checkpoint.exclusive_build``: processes asking for the same generated folder at once build it
once; the others wait, then reuse it (the demo's parallel detection runs on a fresh machine)."""
from __future__ import annotations

import json
import time
from pathlib import Path

from transfer.checkpoint import atomic_write_text, exclusive_build, stamp_matches
from transfer.parallel import run_parallel


@exclusive_build("root")
def slow_writer(root: str, tag: str) -> str:
    """A stamp-pattern writer that takes long enough for a second process to arrive mid-build."""
    root_p = Path(root)
    stamp, out = root_p / "stamp.json", root_p / "data.txt"
    if stamp_matches(stamp, {"v": 1}, [out]):
        return "reused"
    stamp.unlink(missing_ok=True)
    with open(root_p / "builders.log", "a") as f:
        f.write(tag + "\n")
    for i in range(5):  # written piecewise, not atomically: a concurrent reader would see it half done
        with open(out, "a" if i else "w") as f:
            f.write(f"{i}\n")
        time.sleep(0.2)
    atomic_write_text(stamp, json.dumps({"v": 1}))
    return "built"


def test_concurrent_writers_build_once(tmp_path):
    outcomes = run_parallel([(slow_writer, (str(tmp_path / "g"), t), {}) for t in ("a", "b")], jobs=2)
    assert sorted(outcomes) == ["built", "reused"]
    assert len((tmp_path / "g" / "builders.log").read_text().split()) == 1
    assert (tmp_path / "g" / "data.txt").read_text() == "0\n1\n2\n3\n4\n"
