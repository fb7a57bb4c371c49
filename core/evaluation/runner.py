"""Run the protocols over an evaluation set and gather the numbers.

    from sam_core import Predictor, load_model
    from sam_core.evaluation import load_eval_set, evaluate_prompts
    predictor = Predictor(load_model("vit_t"))
    results = evaluate_prompts(predictor, load_eval_set("shared/data/grabcut"), n_clicks=20)

Every image is embedded once and all prompt protocols run on that embedding. `progress` is a
callable ``(done, total)`` called after each image (the CLI passes a tqdm bar's update).
Results are plain dicts of floats and lists (JSON-ready); see `report` to write them out.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np

from ..errors import NotReadyError
from ..predictor import Predictor
from . import prompted
from .coco_metrics import ImageInstances, instance_ap
from .datasets import EvalSet, Sample
from .edges import boundary_counts, edge_map, edge_scores
from .metrics import MAX_CLICKS, summarize_clicks

Progress = Callable[[int, int], None]
PROMPT_PROTOCOLS = ("point", "clicks", "box", "noisy_box")


def _objects(sample: Sample, limit: int | None, rng: np.random.Generator) -> list[np.ndarray]:
    """The sample's non-crowd, non-empty object masks; at most `limit`, drawn at random."""
    masks = [m for m in sample.instances() if m.any()]
    if limit is not None and len(masks) > limit:
        chosen = np.sort(rng.choice(len(masks), size=limit, replace=False))
        masks = [masks[i] for i in chosen]
    return masks


def evaluate_prompts(
    predictor: Predictor,
    eval_set: EvalSet,
    protocols: Sequence[str] = PROMPT_PROTOCOLS,
    n_clicks: int = MAX_CLICKS,
    objects_per_image: int | None = None,
    seed: int = 0,
    use_mask_input: bool = True,
    progress: Progress | None = None,
) -> dict[str, object]:
    """Point / click / box protocols (see `prompted`) over every image of `eval_set`.

    objects_per_image: evaluate at most this many objects per image (a seeded random draw)
    to bound the run time on crowded images; None = all.
    Returns {"set", "n_images", "n_objects", "point": {...}, "clicks": {...}, ...}.
    """
    unknown = set(protocols) - set(PROMPT_PROTOCOLS)
    if unknown:
        raise ValueError(f"unknown protocols {sorted(unknown)}; known: {PROMPT_PROTOCOLS}")
    rng = np.random.default_rng(seed)
    per: dict[str, list] = {"best": [], "oracle": [], "clicks": [], "box": [], "noisy_box": []}
    names: list[str] = []
    start = time.perf_counter()
    for done, sample in enumerate(eval_set.samples, start=1):
        gts = _objects(sample, objects_per_image, rng)
        if gts:
            predictor.set_image(sample.image)
            names.extend([sample.name] * len(gts))
            if "point" in protocols:
                best, oracle = prompted.single_point(predictor, gts, sample.ignore)
                per["best"].append(best)
                per["oracle"].append(oracle)
            if "clicks" in protocols:
                ious = prompted.interactive(predictor, gts, sample.ignore, n_clicks, use_mask_input)
                per["clicks"].append(ious)
            if "box" in protocols:
                per["box"].append(prompted.boxes(predictor, gts, sample.ignore))
            if "noisy_box" in protocols:
                noise_rng = np.random.default_rng([seed, done])
                per["noisy_box"].append(prompted.boxes(predictor, gts, sample.ignore, noise_rng))
        if progress is not None:
            progress(done, len(eval_set.samples))
    if not names:
        raise ValueError(f"{eval_set.name}: no objects to evaluate")
    results: dict[str, object] = {
        "set": eval_set.name,
        "n_images": len(eval_set.samples),
        "n_objects": len(names),
        "objects_per_image": objects_per_image,
        "seconds": time.perf_counter() - start,
        "model": predictor.model_name,
    }
    if per["best"]:
        best, oracle = np.concatenate(per["best"]), np.concatenate(per["oracle"])
        results["point"] = {"miou": float(best.mean()), "miou_oracle": float(oracle.mean())}
        results["per_object_point"] = best.tolist()
    if per["clicks"]:
        ious = np.concatenate(per["clicks"])
        results["clicks"] = {
            "n_clicks": n_clicks,
            "mask_input": use_mask_input,
            **summarize_clicks(ious, max_clicks=MAX_CLICKS),
        }
        if n_clicks < MAX_CLICKS:
            results["clicks"]["note"] = (
                f"only {n_clicks} clicks simulated: objects not reaching the IoU target by then "
                f"count as {MAX_CLICKS} (NoC is then an upper bound)"
            )
    for key in ("box", "noisy_box"):
        if per[key]:
            results[key] = {"miou": float(np.concatenate(per[key]).mean())}
    return results


def evaluate_automatic(
    generator: object,
    eval_set: EvalSet,
    max_dets: Sequence[int] = (10, 100, 1000),
    progress: Progress | None = None,
) -> dict[str, object]:
    """AP, AP50, AP75 and AR@k of an `AutomaticMaskGenerator`'s masks against all instances.

    generator: anything with ``generate(image) -> records`` as `sam_core.AutomaticMaskGenerator`
    (records with "segmentation" and "predicted_iou"). Predictions are ranked by predicted IoU.
    """
    images = []
    start = time.perf_counter()
    for done, sample in enumerate(eval_set.samples, start=1):
        records = generator.generate(sample.image)
        images.append(scored_records(records, *ground_truth(sample)))
        if progress is not None:
            progress(done, len(eval_set.samples))
    scores = instance_ap(images, max_dets)
    return {
        "set": eval_set.name,
        "n_images": len(images),
        "n_instances": int(sum(len(i.gt_masks) for i in images)),
        "n_predictions": int(sum(len(i.pred_scores) for i in images)),
        "seconds": time.perf_counter() - start,
        **scores,
    }


def ground_truth(sample: Sample) -> tuple[np.ndarray, np.ndarray]:
    """(N, H, W) bool instance masks of `sample`, crowd regions included, and (N,) crowd flags."""
    gt = list(sample.instances(include_crowd=True))
    crowd = sample.iscrowd if sample.masks is not None else np.zeros(len(gt), bool)
    gt_masks = np.stack(gt) if gt else np.zeros((0, *sample.shape), bool)
    return gt_masks, crowd


def scored_records(records: Sequence[dict], gt_masks: np.ndarray, crowd: np.ndarray):
    """Automatic-mask records (masks or COCO RLE, ranked by predicted IoU) against the ground
    truth of their image, as pycocotools input (`ImageInstances`)."""
    return ImageInstances(
        gt_masks=gt_masks,
        pred_masks=[r["segmentation"] for r in records],
        pred_scores=np.array([r["predicted_iou"] for r in records]),
        gt_crowd=crowd,
    )


def make_generator(predictor: Predictor, **options: object) -> object:
    """An `AutomaticMaskGenerator` on the predictor's model, or NotReadyError if unavailable."""
    try:
        from .. import AutomaticMaskGenerator
    except ImportError as exc:
        raise NotReadyError(
            "automatic-mask metrics need sam_core.AutomaticMaskGenerator, which this "
            f"installation does not have ({exc})"
        ) from None
    return AutomaticMaskGenerator(predictor, **options)


def evaluate_edges(
    predictor: Predictor,
    eval_set: EvalSet,
    points_per_side: int = 16,
    one_to_one: bool = True,
    progress: Progress | None = None,
) -> dict[str, object]:
    """ODS / OIS / AP / R50 of SAM's zero-shot edge maps (see `edges`) on a BSDS-style set.

    one_to_one: score with one-to-one pixel matching (`edge_matching`, like the benchmark);
    the cheaper tolerance-only scores are always added under "tolerance_matching".
    """
    counts, loose_counts = [], []
    start = time.perf_counter()
    for done, sample in enumerate(eval_set.samples, start=1):
        if sample.boundaries is None:
            raise ValueError(f"{sample.name}: no human boundary maps (edges/{sample.name}.npz)")
        predictor.set_image(sample.image)
        edges = edge_map(predictor, points_per_side)
        loose_counts.append(boundary_counts(edges, sample.boundaries))
        if one_to_one:
            counts.append(boundary_counts(edges, sample.boundaries, one_to_one=True))
        if progress is not None:
            progress(done, len(eval_set.samples))
    loose = edge_scores(loose_counts)
    main_scores = edge_scores(counts) if one_to_one else loose
    return {
        "set": eval_set.name,
        "n_images": len(loose_counts),
        "points_per_side": points_per_side,
        "matching": "one-to-one (max-cardinality bipartite), tolerance 0.0075 x diagonal"
        if one_to_one
        else "distance-transform tolerance (0.0075 x diagonal), not one-to-one",
        "seconds": time.perf_counter() - start,
        **main_scores,
        "tolerance_matching": loose,
    }
