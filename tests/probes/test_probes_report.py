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


def _svg_points(svg: str):
    """(x, y) of every marker drawn in an SVG (matplotlib draws markers as <use x= y=>)."""
    ns = "{http://www.w3.org/2000/svg}"
    return {(round(float(u.get("x")), 1), round(float(u.get("y")), 1)) for u in ET.fromstring(svg).iter(f"{ns}use")}


def _texts(svg: str):
    return [t.text for t in ET.fromstring(svg).iter("{http://www.w3.org/2000/svg}text")]


def test_line_chart_draws_each_series_point_and_label():
    from probes.plots import line_figure, to_svg

    series = {"top-1": [(10, 90.0, 0.0), (20, 91.0, 1.0), (40, float("nan"), 0.0)], "x<y": [(10, 50.0, 0.0)],
              "empty": [(10, float("nan"), 0.0)]}
    fig = line_figure(series, "acc vs k", "k", "%", logx=True)
    ax = fig.axes[0]
    lines = ax.get_lines()
    assert [ln.get_label() for ln in lines] == ["top-1", "x<y"]  # one line per series with a point
    assert lines[0].get_xydata().tolist() == [[10, 90], [20, 91]] and lines[1].get_xydata().tolist() == [[10, 50]]
    assert len(ax.collections) == 1 and len(ax.collections[0].get_segments()) == 1  # one error bar: y_err > 0
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["top-1", "x<y"]
    assert ax.get_xscale() == "log" and [t.get_text() for t in ax.get_xticklabels()] == ["10", "20"]
    svg = to_svg(fig)
    texts = _texts(svg)
    for want in ("acc vs k", "k", "%", "top-1", "x<y", "10", "20"):
        assert want in texts, want
    # the SVG holds the curve's points: each data point's position (matplotlib's own transform, at the
    # SVG's 72 px/inch, y measured from the top) is a drawn marker
    fig.set_dpi(72)
    h = fig.get_figheight() * 72
    drawn = _svg_points(svg)
    for ln in lines:
        for px, py in ax.transData.transform(ln.get_xydata()):
            assert (round(px, 1), round(h - py, 1)) in drawn
    assert line_figure({"a": [(1, float("nan"), 0.0)]}, "t", "x", "y") is None


def test_scatter_has_one_group_per_class_with_its_points():
    from probes.plots import scatter_figure, to_svg

    xy = np.arange(20, dtype=float).reshape(10, 2)
    labels = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
    fig = scatter_figure(xy, labels, ["a", "b&c", "d"], "pca")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a", "b&c", "d"]
    for c, coll in enumerate(ax.collections):
        assert coll.get_offsets().tolist() == xy[labels == c].tolist()
    svg = to_svg(fig)
    assert "b&c" in _texts(svg) and "pca" in _texts(svg) and "PC 1" in _texts(svg)
    assert scatter_figure(np.zeros((0, 2)), np.zeros(0), None, "t") is None


def test_report_sections_embed_their_plots():
    from probes.report import knn_section

    r = {"protocol": "p", "T": 0.07, "backend": "torch", "n_train": 10, "n_test": 5, "ks": [10, 20],
         "k_effective": {10: 10, 20: 10}, "top1": {10: 80.0, 20: 81.5}, "top5": {10: 95.0, 20: 96.0},
         "best_k": 20, "best_top1": 81.5}
    texts = _texts(knn_section(r).svg)
    assert "k-NN accuracy vs k" in texts and "top-1" in texts and "top-5" in texts and "accuracy (%)" in texts
