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


def _neighbour_graph(pred_rc: np.ndarray, gt_rc: np.ndarray, radius: float) -> csr_matrix:
    """(P, G) CSR adjacency: predicted pixel p may match ground-truth pixel g (within radius)."""
    shape = (len(pred_rc), len(gt_rc))
    if len(pred_rc) == 0 or len(gt_rc) == 0:
        return csr_matrix(shape, dtype=np.int8)
    neighbours = cKDTree(gt_rc).query_ball_point(pred_rc, r=radius)
    lengths = np.fromiter((len(n) for n in neighbours), dtype=np.int64, count=len(neighbours))
    if lengths.sum() == 0:
        return csr_matrix(shape, dtype=np.int8)
    columns = np.concatenate([np.asarray(n, dtype=np.int64) for n in neighbours if n])
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    return csr_matrix((np.ones(len(columns), dtype=np.int8), columns, indptr), shape=shape)


def _match(graph: csr_matrix) -> np.ndarray:
    """(P,) bool: which predicted pixels (rows) a maximum-cardinality matching pairs."""
    if graph.shape[0] == 0 or graph.nnz == 0:
        return np.zeros(graph.shape[0], bool)
    # scipy's Hopcroft-Karp is 10-100x faster with the smaller side (ground truth) as rows;
    # perm_type="row" then gives, per predicted pixel (column), its matched row or -1.
    return maximum_bipartite_matching(graph.T.tocsr(), perm_type="row") >= 0


def one_to_one_counts(
    edges: np.ndarray, boundaries: np.ndarray, levels: np.ndarray, radius: float
) -> np.ndarray:
    """(T, 4) counts as `edges.boundary_counts`, with one-to-one matching per annotator.

    The neighbour graph of every pixel above the lowest level is built once per annotator;
    each level matches the sub-graph of its pixels (rows kept in raster order, so each level
    sees exactly the graph it would if built on its own).
    """
    levels = np.asarray(levels, dtype=np.float64)
    gt_points = [np.argwhere(b) for b in boundaries]
    gt_total = int(sum(len(p) for p in gt_points))
    counts = np.zeros((len(levels), 4), dtype=np.int64)
    if len(levels) == 0:
        return counts
    candidates = np.argwhere(edges >= levels.min())
    values = edges[candidates[:, 0], candidates[:, 1]]
    graphs = [_neighbour_graph(candidates, gt_rc, radius) for gt_rc in gt_points]
    done: dict[int, tuple[int, int]] = {}
    for i, level in enumerate(levels):
        rows = np.flatnonzero(values >= level)
        key = len(rows)  # the sets are nested: equal sizes mean equal sets
        if key not in done:
            matched_any = np.zeros(len(rows), bool)
            matched_gt = 0
            for graph in graphs:
                matched = _match(graph[rows])
                matched_any |= matched
                matched_gt += int(matched.sum())
            done[key] = (int(matched_any.sum()), matched_gt)
        counts[i, 0], counts[i, 2] = done[key]
        counts[i, 1] = len(rows)
        counts[i, 3] = gt_total
    return counts
