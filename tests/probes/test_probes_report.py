"""Reports: JSON sanitising, SVG well-formedness, self-contained HTML."""
import json
import xml.etree.ElementTree as ET

import numpy as np
import torch

from probes.plots import line_chart, pca_2d, scatter
from probes.report import to_jsonable, write_reports


def test_to_jsonable_drops_plot_arrays_and_nan():
    d = to_jsonable({"a": float("nan"), "predictions": {1: np.arange(3)}, 5: np.float32(1.5),
                     "t": torch.tensor(2), "l": (1, np.int64(2))})
    assert d == {"a": None, "5": 1.5, "t": 2, "l": [1, 2]}
    json.dumps(d, allow_nan=False)


def test_svgs_are_well_formed():
    svg = line_chart({"top-1": [(10, 90.0, 0.0), (20, 91.0, 1.0)], "x<y": [(10, 50.0, 0.0)]},
                     "acc vs k", "k", "%", logx=True)
    ET.fromstring(svg)
    xy, idx = pca_2d(torch.randn(300, 5), max_points=100)
    assert xy.shape == (100, 2) and len(idx) == 100
    ET.fromstring(scatter(xy, np.arange(100) % 3, ["a", "b&c", "d"], "pca"))
    xy, _ = pca_2d(torch.ones(10, 4))  # constant features: no crash
    assert np.all(xy == 0)


def test_write_reports_minimal(tmp_path):
    rep = {"title": "t", "source": {"spec": "pixels"}, "dataset": {"name": "d"}, "probes": {},
           "warnings": ["w1"], "embedding": {"xy": np.zeros((2, 2)), "labels": np.array([0, 1])}}
    paths = write_reports(tmp_path, "x", rep)
    assert "embedding" not in json.loads(paths["json"].read_text())
    html = paths["html"].read_text()
    assert "<svg" in html and "w1" in html and "http://" not in html.replace("http://www.w3.org/2000/svg", "")
    assert "w1" in paths["md"].read_text()
