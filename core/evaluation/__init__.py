"""Evaluation protocols of the paper (§7, appendix D) on folders of images with instance labels.

    from sam_core import Predictor, load_model
    from sam_core.evaluation import load_eval_set, evaluate_prompts, write_report
    predictor = Predictor(load_model("vit_t"))
    result = evaluate_prompts(predictor, load_eval_set("data/grabcut"), n_clicks=20)
    write_report([result], "eval_out")

Modules: `datasets` (reading sets), `metrics` (IoU, NoC), `clicks` (simulated user),
`prompted` (point / click / box protocols on one image), `coco_metrics` (AP via pycocotools),
`edges` (BSDS edge maps and ODS/OIS/AP), `runner` (whole sets), `report` (tables and plots),
`threshold_search` (automatic-mask thresholds for a model, e.g. after fine-tuning).
"""

from .datasets import EvalSet, Sample, load_eval_set
from .metrics import MAX_CLICKS, batch_iou, clicks_to_reach, mask_iou, summarize_clicks
from .report import write_report
from .runner import (
    PROMPT_PROTOCOLS,
    evaluate_automatic,
    evaluate_edges,
    evaluate_prompts,
    make_generator,
)
from .threshold_search import search_thresholds

__all__ = [
    "MAX_CLICKS",
    "PROMPT_PROTOCOLS",
    "EvalSet",
    "Sample",
    "batch_iou",
    "clicks_to_reach",
    "evaluate_automatic",
    "evaluate_edges",
    "evaluate_prompts",
    "load_eval_set",
    "make_generator",
    "mask_iou",
    "search_thresholds",
    "summarize_clicks",
    "write_report",
]
