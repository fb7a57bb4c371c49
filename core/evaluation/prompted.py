"""Prompt protocols on one image whose embedding is already set in a `Predictor`.

Each function takes the predictor (after `set_image`), the object masks to evaluate and the
ignore mask, and returns per-object IoUs. `runner.evaluate_prompts` loops over a set, embedding
each image once for all protocols.

* `single_point`: one positive click at each object's interior-most pixel, 3 masks out; the
  IoU of the most confident mask (highest predicted IoU) and of the best one (oracle, §7.1).
* `interactive`: click 1 as above (most confident of 3 masks); each further click goes to the
  interior-most error pixel (`clicks.next_click`), all clicks so far plus the previous
  low-res logits of the kept mask (`mask_input`) give one mask (multimask off, as SAM does for
  more than one prompt). An object that is already perfect gets its last click again.
* `boxes`: the tight box of each object, or the paper's noisy box; one mask out.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..predictor import Predictor
from .clicks import interior_point, mask_box, next_click, noisy_box
from .metrics import batch_iou

# Objects decoded per predictor call: bounds the (B, M, H, W) full-size masks in memory.
OBJECT_CHUNK = 16


def _chunks(count: int, size: int = OBJECT_CHUNK) -> list[slice]:
    return [slice(i, min(i + size, count)) for i in range(0, count, size)]


def single_point(
    predictor: Predictor, gts: Sequence[np.ndarray], ignore: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """IoUs (N,) of the most confident and (N,) of the oracle-best of 3 masks, one click each.

    gts: N (H, W) bool object masks of the image set in `predictor`.
    """
    points = np.array([interior_point(gt) for gt in gts])  # (N, 2) xy
    best, oracle = np.zeros(len(gts)), np.zeros(len(gts))
    for part in _chunks(len(gts)):
        masks, scores, _ = predictor.predict(
            points=points[part, None, :], labels=np.ones((len(points[part]), 1)), multimask=True
        )
        for j, index in enumerate(range(part.start, part.stop)):
            ious = batch_iou(masks[j], gts[index], ignore)
            best[index] = ious[int(np.argmax(scores[j]))]
            oracle[index] = ious.max()
    return best, oracle


def interactive(
    predictor: Predictor,
    gts: Sequence[np.ndarray],
    ignore: np.ndarray | None = None,
    n_clicks: int = 20,
    use_mask_input: bool = True,
) -> np.ndarray:
    """(N, n_clicks) IoU of each object after 1..n_clicks simulated clicks."""
    ious = np.zeros((len(gts), n_clicks))
    for part in _chunks(len(gts)):
        ious[part] = _interactive_chunk(predictor, gts[part], ignore, n_clicks, use_mask_input)
    return ious


def _interactive_chunk(
    predictor: Predictor,
    gts: Sequence[np.ndarray],
    ignore: np.ndarray | None,
    n_clicks: int,
    use_mask_input: bool,
) -> np.ndarray:
    count = len(gts)
    points = np.array([interior_point(gt) for gt in gts])[:, None, :]  # (B, 1, 2) xy
    labels = np.ones((count, 1), dtype=np.int64)
    masks, scores, logits = predictor.predict(points=points, labels=labels, multimask=True)
    keep = scores.argmax(axis=1)
    rows = np.arange(count)
    pred, prev_logits = masks[rows, keep], logits[rows, keep][:, None]  # (B,H,W), (B,1,256,256)
    ious = np.zeros((count, n_clicks))
    ious[:, 0] = [batch_iou(pred[b][None], gts[b], ignore)[0] for b in range(count)]
    for click in range(1, n_clicks):
        new_points, new_labels = [], []
        for b in range(count):
            found = next_click(pred[b], gts[b], ignore)
            if found is None:  # already perfect: the same click again adds nothing
                found = (*points[b, -1], labels[b, -1])
            new_points.append(found[:2])
            new_labels.append(found[2])
        points = np.concatenate([points, np.array(new_points)[:, None, :]], axis=1)
        labels = np.concatenate([labels, np.array(new_labels)[:, None]], axis=1)
        masks, _, logits = predictor.predict(
            points=points,
            labels=labels,
            mask_input=prev_logits if use_mask_input else None,
            multimask=False,
        )
        pred, prev_logits = masks[:, 0], logits
        ious[:, click] = [batch_iou(pred[b][None], gts[b], ignore)[0] for b in range(count)]
    return ious


def boxes(
    predictor: Predictor,
    gts: Sequence[np.ndarray],
    ignore: np.ndarray | None = None,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """(N,) IoU of the single mask from each object's box; noisy boxes when `rng` is given."""
    image_hw = gts[0].shape if len(gts) else (0, 0)
    box_list = []
    for gt in gts:
        box = mask_box(gt)
        box_list.append(noisy_box(box, image_hw, rng) if rng is not None else box)
    box_array = np.array(box_list).reshape(-1, 4)
    ious = np.zeros(len(gts))
    for part in _chunks(len(gts)):
        masks, _, _ = predictor.predict(box=box_array[part], multimask=False)
        for j, index in enumerate(range(part.start, part.stop)):
            ious[index] = batch_iou(masks[j], gts[index], ignore)[0]
    return ious
