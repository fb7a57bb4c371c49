"""One-to-one boundary pixel matching, closer to the BSDS500 benchmark's `correspondPixels`.

Each predicted edge pixel may be matched to at most one ground-truth pixel of an annotator
(and vice versa) within the tolerance. The benchmark solves a minimum-cost assignment; we take
a maximum-cardinality bipartite matching (Hopcroft-Karp, `scipy`), which gives the same number
of matches whenever the cost only breaks ties between equally large matchings (the counts,
not the pairs, enter precision and recall). As in the benchmark, a predicted pixel counts as
correct if any annotator matched it, and recall sums each annotator's matched pixels.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import maximum_bipartite_matching
from scipy.spatial import cKDTree


def _match(pred_rc: np.ndarray, gt_rc: np.ndarray, radius: float) -> tuple[np.ndarray, int]:
    """(P,) bool: which predicted pixels are matched, and the number of matched GT pixels."""
    if len(pred_rc) == 0 or len(gt_rc) == 0:
        return np.zeros(len(pred_rc), bool), 0
    neighbours = cKDTree(gt_rc).query_ball_point(pred_rc, r=radius)
    lengths = np.fromiter((len(n) for n in neighbours), dtype=np.int64, count=len(neighbours))
    if lengths.sum() == 0:
        return np.zeros(len(pred_rc), bool), 0
    columns = np.concatenate([np.asarray(n, dtype=np.int64) for n in neighbours if n])
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    graph = csr_matrix(
        (np.ones(len(columns), dtype=np.int8), columns, indptr), shape=(len(pred_rc), len(gt_rc))
    )
    matched_col = maximum_bipartite_matching(graph, perm_type="column")
    matched = matched_col >= 0
    return matched, int(matched.sum())


def one_to_one_counts(
    edges: np.ndarray, boundaries: np.ndarray, levels: np.ndarray, radius: float
) -> np.ndarray:
    """(T, 4) counts as `edges.boundary_counts`, with one-to-one matching per annotator."""
    gt_points = [np.argwhere(b) for b in boundaries]
    gt_total = int(sum(len(p) for p in gt_points))
    counts = np.zeros((len(levels), 4), dtype=np.int64)
    for i, level in enumerate(levels):
        pred_rc = np.argwhere(edges >= level)
        matched_any = np.zeros(len(pred_rc), bool)
        for gt_rc in gt_points:
            matched, n_gt = _match(pred_rc, gt_rc, radius)
            matched_any |= matched
            counts[i, 2] += n_gt
        counts[i, 0] = int(matched_any.sum())
        counts[i, 1] = len(pred_rc)
        counts[i, 3] = gt_total
    return counts
