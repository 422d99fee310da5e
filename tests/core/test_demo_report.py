"""The demo's one report shows every stage's numbers, pretrained beside its baselines."""
import json

from transfer.demo import STAGES
from transfer.demo_report import monitor_curve, write_demo_report


def test_report_has_every_protocol_and_baseline(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_text("\n".join(json.dumps(r) for r in [
        {"step": 10, "epoch": 0.0427, "loss": 5.0}, {"step": 234, "knn_top1": 80.25, "knn_split": "val"},
        {"step": 468, "epoch": 2.0, "knn_top1": 82.5, "knn_split": "val"}, '{"step": 470, "knn_t']) + "\n")
    summary = {
        "pretrain": {"seconds": 500.0, "result": {"budget": {"method": "simclr/loss", "arch": "small_resnet18", "width": 0.25,
                                                             "size": 28, "epochs": 3.0, "images": 179712}}},
        "knn": {"seconds": 60.0, "result": {"ssl": {"knn_top1_k20": 84.11}, "random_init": {"knn_top1_k20": 59.46},
                                            "raw_pixels": {"knn_top1_k20": 85.69}}},
        "probe": {"seconds": 100.0, "result": {"ssl": {"linear_top1": 86.9, "fewshot_5way_1shot_proto": 60.1,
                                                       "fewshot_5way_5shot_proto": 75.2},
                                               "raw_pixels": {"linear_top1": 84.78}}},
        "finetune": {"seconds": 90.0, "result": {"finetune_pretrained_top1": 78.4, "finetune_random_top1": 70.2,
                                                 "finetune_pixels_top1": 74.0}},
        "det": {"seconds": 200.0, "result": {"fmnist_det": {"ssl": {"bbox_AP": 31.5, "bbox_AP50": 60.0},
                                                            "random_init": {"bbox_AP": 20.25}}}},
        "seg": {"seconds": 80.0, "result": {"fmnist_seg": {"ssl": {"mIoU": 55.5}, "random_init": {"mIoU": 44.4}}}},
    }
    paths = write_demo_report(tmp_path, summary, log)
    md = paths["md"].read_text()
    for v in ("86.90", "84.78", "84.11", "59.46", "78.40", "70.20", "74.00", "31.50", "20.25", "55.50", "44.40",
              "82.50", "179,712"):
        assert v in md, v
    assert "validation split of train" in md and "| fmnist_det | random init | 20.25 |" in md
    assert "<svg" in paths["html"].read_text()
    curve = monitor_curve(log)
    assert [p["knn_top1"] for p in curve] == [80.25, 82.5]  # the cut line is skipped
    assert abs(curve[0]["epoch"] - 1.0) < 0.01 and curve[1]["epoch"] == 2.0  # epoch from the step when absent
    assert STAGES[-1] == "report" and "finetune" in STAGES
