"""Running sam_core over the samples of a FiftyOne view: one model per process, prompted masks
for one image, and the loop that skips finished samples and reports failures.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import fiftyone as fo
import numpy as np

from sam_core import ImageEmbedding, Predictor, load_model
from sam_core.image_io import read_image

from .conversion import DISK_MASK_PIXELS, mask_to_detection
from .prompts import ObjectPrompt

_PREDICTORS: dict[tuple[str, str], Predictor] = {}
_LOCK = threading.Lock()
# Recent image embeddings per (model, device, file, mtime, size): reruns and other operators
# on the same images skip the encoder. MobileSAM embeddings are ~4 MB each.
_EMBEDDINGS: OrderedDict[tuple, ImageEmbedding] = OrderedDict()
EMBEDDING_CACHE_SIZE = 16

Progress = Callable[[int, int], None]


def get_predictor(model_name: str = "vit_t", device: str = "cpu") -> Predictor:
    """A `Predictor` for `model_name` (registry name or checkpoint path), loaded once per
    process and reused by every operator run."""
    key = (model_name, device)
    with _LOCK:
        if key not in _PREDICTORS:
            _PREDICTORS[key] = Predictor(load_model(model_name, device=device), device=device)
        return _PREDICTORS[key]


def cached_embedding(predictor: Predictor, image: np.ndarray, filepath: str | None):
    """The `ImageEmbedding` of `image` (read from `filepath`), reused when this process
    embedded the same file (same size and modification time) recently."""
    if filepath is None or not os.path.isfile(filepath):
        return predictor.compute_embedding(image)
    stat = os.stat(filepath)
    key = (predictor.model_name, str(predictor.device), filepath, stat.st_mtime_ns, stat.st_size)
    with _LOCK:
        embedding = _EMBEDDINGS.get(key)
        if embedding is not None:
            _EMBEDDINGS.move_to_end(key)
            return embedding
    embedding = predictor.compute_embedding(image)
    with _LOCK:
        _EMBEDDINGS[key] = embedding
        while len(_EMBEDDINGS) > EMBEDDING_CACHE_SIZE:
            _EMBEDDINGS.popitem(last=False)
    return embedding


def set_image_cached(predictor: Predictor, image: np.ndarray, filepath: str | None) -> None:
    """`predictor.set_image(image)` through the embedding cache (see `cached_embedding`)."""
    predictor.set_embedding(cached_embedding(predictor, image, filepath))


def segment_prompts(
    predictor: Predictor, prompts: list[ObjectPrompt]
) -> list[tuple[np.ndarray, float]]:
    """One (H, W) bool mask and its predicted IoU per prompt, on the predictor's current image.

    Boxes are decoded in one batch (single mask each). A single point asks for 3 candidates
    and keeps the best; several points ask for one mask.
    """
    results: list[tuple[np.ndarray, float] | None] = [None] * len(prompts)
    box_indices = [i for i, p in enumerate(prompts) if p.box_xyxy is not None]
    if box_indices:
        boxes = np.stack([prompts[i].box_xyxy for i in box_indices])
        masks, scores, _ = predictor.predict(box=boxes, multimask=False)
        for row, i in enumerate(box_indices):
            results[i] = (masks[row, 0], float(scores[row, 0]))
    for i, prompt in enumerate(prompts):
        if prompt.box_xyxy is not None:
            continue
        multimask = len(prompt.points_xy) == 1
        masks, scores, _ = predictor.predict(
            points=prompt.points_xy, labels=prompt.point_labels, multimask=multimask
        )
        best = int(np.argmax(scores))
        results[i] = (masks[best], float(scores[best]))
    return results  # type: ignore[return-value]


def prompted_detections(
    predictor: Predictor,
    image: np.ndarray,
    prompts: list[ObjectPrompt],
    mask_dir: str | None = None,
    stem: str = "mask",
    filepath: str | None = None,
    disk_mask_pixels: int = DISK_MASK_PIXELS,
) -> fo.Detections:
    """Masks for `prompts` on `image` ((H, W) or (H, W, C), any dtype) as `fo.Detections`
    with ``predicted_iou`` and the prompt that made each mask (``prompt_box`` xyxy px or
    ``prompt_points`` [[x, y]] px + ``prompt_labels``). filepath: the image's file, to reuse
    a cached embedding."""
    detections = []
    if prompts:
        set_image_cached(predictor, image, filepath)
        for index, (prompt, (mask, score)) in enumerate(
            zip(prompts, segment_prompts(predictor, prompts), strict=True)
        ):
            extra: dict[str, Any] = {"predicted_iou": score, "prompt_type": prompt.kind}
            if prompt.box_xyxy is not None:
                extra["prompt_box"] = [float(v) for v in prompt.box_xyxy]
            else:
                extra["prompt_points"] = prompt.points_xy.astype(float).tolist()
                extra["prompt_labels"] = prompt.point_labels.astype(int).tolist()
            if prompt.source_id is not None:
                extra["prompt_id"] = prompt.source_id
            mask_file = None if mask_dir is None else f"{mask_dir}/{stem}_{index:04d}.png"
            detection = mask_to_detection(
                mask, prompt.label, mask_file, disk_mask_pixels=disk_mask_pixels, **extra
            )
            if detection is not None:
                detections.append(detection)
    return fo.Detections(detections=detections)


@dataclass
class RunSummary:
    """What a run over a view did: counts, masks written and per-sample failures."""

    processed: int = 0
    skipped: int = 0
    masks: int = 0
    failures: list[dict[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "processed": self.processed,
            "skipped": self.skipped,
            "masks": self.masks,
            "failed": len(self.failures),
            "failures": self.failures,
        }


def run_over_view(
    view: fo.core.collections.SampleCollection,
    label_field: str,
    make_labels: Callable[[fo.Sample, np.ndarray], fo.Detections],
    overwrite: bool = False,
    progress: Progress | None = None,
) -> RunSummary:
    """Call ``make_labels(sample, image)`` for every sample of `view` and save the result in
    `label_field`. Samples whose field is already set are skipped unless `overwrite`. A sample
    that fails (missing/unreadable file, bad prompt) is recorded in the summary and the others
    go on. progress(done, total) is called after each sample.
    """
    summary = RunSummary()
    total = len(view)
    has_field = label_field in view.get_field_schema()
    for done, sample in enumerate(view.iter_samples(autosave=False), start=1):
        if not overwrite and has_field and sample[label_field] is not None:
            summary.skipped += 1
        else:
            try:
                image = read_image(sample.filepath)
                labels = make_labels(sample, image)
            except Exception as error:  # reported per sample; the rest of the view goes on
                summary.failures.append(
                    {"id": sample.id, "filepath": sample.filepath, "error": str(error)}
                )
            else:
                sample[label_field] = labels
                sample.save()
                summary.processed += 1
                summary.masks += len(labels.detections)
        if progress is not None:
            progress(done, total)
    return summary
