"""Zero-shot edge detection (paper §7.2, D.2) and BSDS-style boundary metrics.

Edge map (`edge_map`), following D.2: a 16 x 16 grid of foreground points, three masks each
(768), no IoU or stability filtering; redundant masks removed by box NMS (IoU 0.7, most
confident first); each kept mask's unthresholded probability map (sigmoid of its logits) is
Sobel-filtered and the response kept only on the mask's boundary pixels (inner and outer,
``find_boundaries(mode="thick")``); the pixel-wise max over masks is linearly normalised to
[0, 1] and thinned by edge non-maximum suppression across the edge direction (from the
Hessian of the smoothed edge map).

Boundary metrics (`boundary_counts`, `edge_scores`): precision, recall and F over thresholds,
accumulated like the BSDS500 benchmark (precision counts predicted pixels matched to any
annotator, recall sums each annotator's matched pixels; tolerance 0.0075 of the image
diagonal, the benchmark's default). Two matchings: ``one_to_one=True`` pairs pixels one-to-one
per annotator (`edge_matching`, close to the benchmark's `correspondPixels`); the default here is
the cheaper tolerance matching, where a pixel is matched when any pixel of the other map lies
within the tolerance (distance transforms). The latter can only score higher: a predicted pixel
may share a ground-truth pixel with a neighbour (doubled edges all count). `runner` reports both.
ODS: best F of the dataset-wide counts at one threshold; OIS: each
image at its own best threshold; AP: area under the (monotone) precision-recall curve;
R50: the highest recall with precision ≥ 0.5.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy import ndimage
from scipy.special import expit
from skimage.segmentation import find_boundaries

from ..mask_upsampling import upsample_logits
from ..predictor import Predictor
from .edge_matching import one_to_one_counts

BSDS_MAX_DIST = 0.0075  # tolerance as a fraction of the image diagonal (BSDS default)
N_THRESHOLDS = 99
_CHUNK = 32  # grid points decoded per call (x3 masks)


def grid_points(image_hw: tuple[int, int], points_per_side: int) -> np.ndarray:
    """(n², 2) xy pixel centres of an n x n regular grid over the image."""
    h, w = image_hw
    offsets = (np.arange(points_per_side) + 0.5) / points_per_side
    xs, ys = np.meshgrid(offsets * w - 0.5, offsets * h - 0.5)
    return np.stack([xs.ravel(), ys.ravel()], axis=1)


def _box_nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """Indices kept by greedy NMS over (K, 4) x0, y0, x1, y1 boxes, highest score first."""
    order = np.argsort(-scores, kind="stable")
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep: list[int] = []
    while order.size:
        i = order[0]
        keep.append(int(i))
        rest = order[1:]
        x0 = np.maximum(boxes[i, 0], boxes[rest, 0])
        y0 = np.maximum(boxes[i, 1], boxes[rest, 1])
        x1 = np.minimum(boxes[i, 2], boxes[rest, 2])
        y1 = np.minimum(boxes[i, 3], boxes[rest, 3])
        inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
        iou = inter / np.maximum(areas[i] + areas[rest] - inter, 1e-9)
        order = rest[iou <= threshold]
    return np.array(keep, dtype=np.int64)


def _boxes_of(masks: torch.Tensor) -> np.ndarray:
    """(K, H, W) bool → (K, 4) x0, y0, x1 + 1, y1 + 1 boxes; empty masks get a zero box."""
    rows = masks.any(dim=2)
    cols = masks.any(dim=1)
    result = np.zeros((masks.shape[0], 4))
    for k in range(masks.shape[0]):
        r = torch.nonzero(rows[k]).flatten()
        c = torch.nonzero(cols[k]).flatten()
        if r.numel():
            result[k] = [c[0].item(), r[0].item(), c[-1].item() + 1, r[-1].item() + 1]
    return result


def edge_map(
    predictor: Predictor, points_per_side: int = 16, nms_threshold: float = 0.7
) -> np.ndarray:
    """(H, W) float32 edge strength in [0, 1] for the image set in `predictor` (see above)."""
    geometry = predictor.embedding.geometry
    points = grid_points(geometry.original_hw, points_per_side)
    low_res, scores, boxes = [], [], []
    for start in range(0, len(points), _CHUNK):
        chunk = points[start : start + _CHUNK, None, :]
        _, chunk_scores, chunk_logits = predictor.predict(
            points=chunk, labels=np.ones(chunk.shape[:2]), multimask=True
        )
        flat = torch.from_numpy(chunk_logits.reshape(-1, 256, 256))
        boxes.append(_boxes_of(upsample_logits(flat, geometry) > 0))
        low_res.append(flat.half())
        scores.append(chunk_scores.reshape(-1))
    all_boxes, all_scores = np.concatenate(boxes), np.concatenate(scores)
    nonempty = (all_boxes[:, 2] > all_boxes[:, 0]) & (all_boxes[:, 3] > all_boxes[:, 1])
    valid = np.flatnonzero(nonempty)
    kept = valid[_box_nms(all_boxes[valid], all_scores[valid], nms_threshold)]
    logits = torch.cat(low_res)[torch.from_numpy(kept)]
    edges = np.zeros(geometry.original_hw, dtype=np.float32)
    for start in range(0, len(kept), _CHUNK):
        full = upsample_logits(logits[start : start + _CHUNK].float(), geometry).numpy()
        for mask_logits in full:
            prob = expit(mask_logits)
            sobel = np.hypot(ndimage.sobel(prob, axis=0), ndimage.sobel(prob, axis=1))
            sobel[~find_boundaries(mask_logits > 0, mode="thick")] = 0.0
            np.maximum(edges, sobel, out=edges)
    low, high = float(edges.min()), float(edges.max())
    if high > low:
        edges = (edges - low) / (high - low)
    return edge_nms(edges)


def edge_nms(edges: np.ndarray, smoothing: float = 1.0) -> np.ndarray:
    """Keep only pixels that are local maxima of an (H, W) edge map across the edge.

    The edge's normal comes from the Hessian of the Gaussian-smoothed map (the direction of
    strongest negative curvature); a pixel survives if it is ≥ both neighbours one pixel away
    along that normal (bilinear interpolation).
    """
    smooth = ndimage.gaussian_filter(edges.astype(np.float64), smoothing)
    dyy = ndimage.sobel(ndimage.sobel(smooth, axis=0), axis=0)
    dxx = ndimage.sobel(ndimage.sobel(smooth, axis=1), axis=1)
    dxy = ndimage.sobel(ndimage.sobel(smooth, axis=0), axis=1)
    along = 0.5 * np.arctan2(2 * dxy, dxx - dyy)  # eigenvector of the larger eigenvalue
    normal = along + np.pi / 2
    ny, nx = np.sin(normal), np.cos(normal)
    rows, cols = np.indices(edges.shape, dtype=np.float64)
    kept = edges.copy()
    for sign in (1.0, -1.0):
        neighbour = ndimage.map_coordinates(
            edges, [rows + sign * ny, cols + sign * nx], order=1, mode="nearest"
        )
        kept[edges < neighbour] = 0.0
    return kept.astype(np.float32)


def thresholds(count: int = N_THRESHOLDS) -> np.ndarray:
    """(count,) thresholds in (0, 1), as the BSDS benchmark spaces them."""
    return np.linspace(1.0 / (count + 1), 1.0 - 1.0 / (count + 1), count)


def boundary_counts(
    edges: np.ndarray,
    boundaries: np.ndarray,
    levels: np.ndarray | None = None,
    one_to_one: bool = False,
) -> np.ndarray:
    """Match an (H, W) edge map in [0, 1] against (A, H, W) human boundary maps.

    one_to_one: match pixels one-to-one per annotator (`edge_matching`, closer to the BSDS
    benchmark, slower) instead of by distance tolerance alone.
    Returns (T, 4) counts per threshold: matched predicted pixels, predicted pixels, matched
    ground-truth pixels (summed over annotators), ground-truth pixels (summed).
    """
    levels = thresholds() if levels is None else np.asarray(levels)
    boundaries = np.asarray(boundaries, dtype=bool)
    if boundaries.ndim == 2:
        boundaries = boundaries[None]
    if boundaries.shape[1:] != edges.shape:
        raise ValueError(f"edge map {edges.shape} and boundaries {boundaries.shape} differ")
    radius = BSDS_MAX_DIST * float(np.hypot(*edges.shape))
    if one_to_one:
        return one_to_one_counts(edges, boundaries, levels, radius)
    near_gt = ndimage.distance_transform_edt(~boundaries.any(axis=0)) <= radius
    gt_total = int(boundaries.sum())
    counts = np.zeros((len(levels), 4), dtype=np.int64)
    for i, level in enumerate(levels):
        predicted = edges >= level
        counts[i, 0] = np.count_nonzero(predicted & near_gt)
        counts[i, 1] = np.count_nonzero(predicted)
        if counts[i, 1]:
            near_pred = ndimage.distance_transform_edt(~predicted) <= radius
            counts[i, 2] = np.count_nonzero(boundaries & near_pred[None])
        counts[i, 3] = gt_total
    return counts


def _prf(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    counts = np.asarray(counts, dtype=np.float64)
    precision = np.divide(
        counts[..., 0], counts[..., 1], out=np.ones_like(counts[..., 0]), where=counts[..., 1] > 0
    )
    recall = np.divide(
        counts[..., 2], counts[..., 3], out=np.zeros_like(counts[..., 2]), where=counts[..., 3] > 0
    )
    denom = precision + recall
    f = np.divide(2 * precision * recall, denom, out=np.zeros_like(denom), where=denom > 0)
    return precision, recall, f


def edge_scores(per_image_counts: Sequence[np.ndarray]) -> dict[str, float]:
    """ODS, OIS, AP and R50 from each image's (T, 4) `boundary_counts` (same thresholds)."""
    stack = np.stack([np.asarray(c) for c in per_image_counts])  # (I, T, 4)
    precision, recall, f = _prf(stack.sum(axis=0))
    best_per_image = np.array([np.argmax(_prf(c)[2]) for c in stack])
    ois_counts = stack[np.arange(len(stack)), best_per_image].sum(axis=0)
    order = np.argsort(recall)
    r_sorted = recall[order]
    p_monotone = np.maximum.accumulate(precision[order][::-1])[::-1]
    r_axis = np.concatenate([[0.0], r_sorted])
    p_axis = np.concatenate([[p_monotone[0]], p_monotone])
    above_half = recall[precision >= 0.5]
    return {
        "ODS": float(f.max()),
        "OIS": float(_prf(ois_counts)[2]),
        "AP": float(np.sum(np.diff(r_axis) * p_axis[1:])),
        "R50": float(above_half.max()) if above_half.size else 0.0,
    }
