"""``transfer bench amp``: both trainers really differ in precision, every step is timed, the
ratio is fp32 / bf16 of the medians."""
from __future__ import annotations

import json
import statistics

from transfer.cli import main


def test_bench_amp_reports_the_median_ratio(tmp_path, capsys):
    sets = ["data.name=synthetic", "data.size=16", "optim.batch_size=32", "model.width=0.125",
            "model.proj_hidden=64", "model.proj_dim=32", "optim.epochs=1", "optim.warmup_epochs=0.1"]
    argv = ["bench", "amp", "--reps", "3", "--json"] + [a for s in sets for a in ("--set", s)]
    assert main(argv) == 0
    r = json.loads(capsys.readouterr().out)
    assert len(r["fp32_all"]) == len(r["bf16_all"]) == 3 and r["batch"] == 32
    assert r["fp32_s"] == round(statistics.median(r["fp32_all"]), 4)
    assert abs(r["speedup"] - r["fp32_s"] / r["bf16_s"]) < 0.01  # the medians, rounded


def test_bench_amp_refuses_nonpositive_reps(capsys):
    from tests.conftest import cli_error

    assert "--reps" in cli_error(capsys, ["bench", "amp", "--reps", "0"])
