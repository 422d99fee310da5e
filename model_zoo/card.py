"""The model card: Markdown with YAML front matter, in the Hugging Face model-card style.

Front matter keys: ``license``, ``library_name``, ``pipeline_tag``, ``tags``, ``datasets``,
``model_name``, ``method``, ``form``, ``momentum``, ``arch`` (dict) and ``arch_name``, ``epochs``,
``images_seen``, ``data`` (name, input size, mean, std), ``weights_sha256``, ``git_commit``,
``conversions`` and ``model-index`` (one entry per result: task, dataset, metric; as on the Hub).
The body has a results table naming each protocol, the files with their sha256, and how to use them.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping

import yaml


def _plain(v: Any) -> Any:
    """Only YAML-safe plain types in the front matter."""
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    return str(v)


def _fmt(v: Any) -> str:
    return f"{v:.2f}" if isinstance(v, float) else str(v)


def front_matter(name: str, meta: Mapping[str, Any], rows: List[Dict[str, Any]], conversions: Mapping[str, Any],
                 license: str) -> Dict[str, Any]:
    dataset = meta.get("dataset")
    fm: Dict[str, Any] = {
        "license": license,
        "library_name": "transfer-ssl",
        "pipeline_tag": "image-feature-extraction",
        "tags": [t for t in ("self-supervised-learning", "resnet", str(meta.get("method") or ""),
                             str(meta.get("arch_name") or "")) if t],
        "datasets": [str(dataset)] if dataset else [],
        "model_name": name,
        "method": meta.get("method"),
        "form": meta.get("form"),
        "momentum": meta.get("momentum"),
        "arch_name": meta.get("arch_name"),
        "arch": meta.get("arch"),
        "epochs": meta.get("epochs"),
        "images_seen": meta.get("images_seen"),
        "data": {"name": dataset, "input_size": meta.get("input_size"), "mean": meta.get("mean"),
                 "std": meta.get("std")},
        "weights_sha256": meta.get("weights_sha256"),
        "git_commit": meta.get("git_commit"),
        "conversions": dict(conversions),
        "model-index": [{"name": name, "results": [
            {"task": {"type": "image-classification" if r.get("kind") == "probe" else str(r.get("task", "transfer")),
                      "name": r["protocol"]},
             "dataset": {"name": r["dataset"], "type": r["dataset"], "split": r["split"]},
             "metrics": [{"type": "accuracy" if r.get("kind") == "probe" else r["metric"], "value": r["value"],
                          "name": r["metric"]}]}
            for r in rows]}],
    }
    return _plain(fm)


def render(name: str, meta: Mapping[str, Any], rows: List[Dict[str, Any]], files: Mapping[str, Dict[str, Any]],
           conversions: Mapping[str, Any], license: str, warnings: List[str]) -> str:
    fm = front_matter(name, meta, rows, conversions, license)
    arch = meta.get("arch") or {}
    lines = ["---", yaml.safe_dump(fm, sort_keys=False, allow_unicode=True, width=1000).rstrip(), "---", "",
             f"# {name}", "",
             f"A {meta.get('arch_name', '?')} backbone (width {arch.get('width', 1.0)}"
             f"{', small-image stem' if arch.get('small') else ''}) pretrained with **{meta.get('method', '?')}** "
             f"({meta.get('form', '?')} form) for {meta.get('epochs', '?')} epochs "
             f"({meta.get('images_seen', '?')} images seen) on **{meta.get('dataset', '?')}** at "
             f"{meta.get('input_size', '?')} px. Licence: {license}.", "",
             "## Results", ""]
    if rows:
        lines += ["| protocol | dataset | split | metric | value | from |", "|---|---|---|---|---|---|"]
        for r in sorted(rows, key=lambda r: (r.get("kind") != "probe", r["protocol"], r["metric"])):
            v = _fmt(r["value"]) + (f" ± {_fmt(r['ci95'])}" if isinstance(r.get("ci95"), float) else "")
            if r.get("provenance"):
                v += " (unverified)"
            lines.append(f"| {r['protocol']} | {r['dataset']} | {r['split']} | {r['metric']} | {v} | `{r['source']}` |")
    else:
        lines.append("No results were found in the run folder (publish with `--probe` to run the probes).")
    knn = meta.get("knn_top1")
    if isinstance(knn, (int, float)):
        lines += ["", f"Online k-NN monitor during pretraining (not a protocol above): top-1 {knn:.2f} %."]
    lines += ["", "Every number above comes with its full report in `results.json`.", "", "## Files", "",
              "| file | bytes | sha256 |", "|---|---|---|"]
    lines += [f"| `{f}` | {rec['size']} | `{rec['sha256']}` |" for f, rec in sorted(files.items())]
    lines += ["", "`README.md` (this card) and all the files above are listed in `SHA256SUMS`; "
              "`transfer zoo get` checks every file against the zoo index.", ""]
    skipped = {k: v for k, v in conversions.items() if not isinstance(v, list)}
    if skipped:
        lines += ["Conversions not published:"] + [f"- {k}: {v}" for k, v in skipped.items()] + [""]
    tv = float(arch.get("width", 1.0)) == 1.0
    lines += ["## Use", "", "With this zoo as `$TRANSFER_ZOO` (or `zoo=` / `--zoo` naming it):", "", "```python",
              "import model_zoo"]
    lines += ([f'model = model_zoo.load("{name}")  # torchvision.models.ResNet, fc untrained'
               + (" (3x3 stride-1 stem, no max-pool)" if arch.get("small") else "")] if tv else
              [f"# width {arch.get('width')}: no torchvision equivalent, so model_zoo.load refuses it"])
    lines += [f'backbone, meta = model_zoo.load_backbone("{name}")  # transfer.backbones.ResNetBackbone',
              "```", "", "```bash",
              f"transfer probe knn --ckpt zoo:{name} --data {meta.get('dataset') or 'digits'}",
              f"transfer zoo get {name} -o ./{name}", "```", ""]
    if "detectron2" in conversions and isinstance(conversions["detectron2"], list):
        lines += ["detectron2: merge `detectron2.yaml` into your config and set `MODEL.WEIGHTS` to the absolute path "
                  "of `detectron2.pkl`. mmseg / mmdet: `mmseg_mm_config.py` (`init_cfg` with `prefix='backbone.'`) "
                  "and `mmseg.pth`. In both fragments the weights path is relative to the model folder.", ""]
    if warnings:
        lines += ["## Notes from publishing", ""] + [f"- {w}" for w in warnings] + [""]
    return "\n".join(lines)


def parse_front_matter(text: str) -> Dict[str, Any]:
    """The YAML front matter of a card as a dict."""
    if not text.startswith("---\n"):
        return {}
    end = text.find("\n---\n", 4)
    return yaml.safe_load(text[4:end]) if end > 0 else {}
