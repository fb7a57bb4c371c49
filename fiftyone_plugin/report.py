"""Quality report numbers and plotly figures from saved ratings (like the paper's Fig. 11:
rating histogram per model with mean and 95 % confidence interval)."""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import numpy as np


def summarize(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per field: n, counts (10 ints for ratings 1..10), mean, ci95 (half-width, normal
    approximation; 0 for n < 2)."""
    by_field: dict[str, list[int]] = defaultdict(list)
    for row in rows:
        by_field[row["field"]].append(int(row["rating"]))
    summary = {}
    for field, ratings in by_field.items():
        values = np.asarray(ratings, dtype=float)
        half = 1.96 * values.std(ddof=1) / math.sqrt(len(values)) if len(values) > 1 else 0.0
        summary[field] = {
            "n": len(values),
            "counts": np.bincount(values.astype(int), minlength=11)[1:].tolist(),
            "mean": float(values.mean()),
            "ci95": float(half),
        }
    return summary


def histogram_traces(summary: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Plotly bar traces: percent of masks per rating 1..10, one trace per field."""
    traces = []
    for field, stats in summary.items():
        total = max(stats["n"], 1)
        traces.append(
            {
                "type": "bar",
                "name": f"{field}: {stats['mean']:.2f} ± {stats['ci95']:.2f} (n={stats['n']})",
                "x": list(range(1, 11)),
                "y": [100.0 * c / total for c in stats["counts"]],
            }
        )
    return traces


def scatter_traces(rows: list[dict[str, Any]], score: str) -> list[dict[str, Any]]:
    """Plotly scatter traces of rating (y) against `score` ("predicted_iou" or
    "stability_score") per field; rows without that score are left out."""
    points: dict[str, tuple[list[float], list[int]]] = defaultdict(lambda: ([], []))
    for row in rows:
        if row.get(score) is not None:
            points[row["field"]][0].append(float(row[score]))
            points[row["field"]][1].append(int(row["rating"]))
    return [
        {"type": "scatter", "mode": "markers", "name": field, "x": xs, "y": ys}
        for field, (xs, ys) in points.items()
    ]


def summary_markdown(summary: dict[str, dict[str, Any]]) -> str:
    """A markdown table: field, number of ratings, mean ± 95 % CI."""
    if not summary:
        return "No ratings yet. Rate masks in the **samscope: mask review** panel."
    lines = ["| field | ratings | mean rating (95% CI) |", "|---|---|---|"]
    for field, stats in summary.items():
        lines.append(f"| {field} | {stats['n']} | {stats['mean']:.2f} ± {stats['ci95']:.2f} |")
    return "\n".join(lines)
