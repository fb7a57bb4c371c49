"""Writing evaluation results: one table (markdown, CSV), the raw JSON, and a click plot.

`summary_rows` flattens the result dicts of `runner` into rows (set, metric, value), which
`write_report` writes as ``<stem>.json``, ``<stem>.md``, ``<stem>.csv`` and, when there are
click curves, ``<stem>_clicks.png`` (mIoU after 1..N clicks, one line per set).
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path

from ..image_io import write_bytes

# Curve points shown in the table (the paper's N = 1, 2, 3, 5, 9).
TABLE_CLICKS = (1, 2, 3, 5, 9)


def summary_rows(results: Sequence[dict]) -> list[tuple[str, str, float]]:
    """(set, metric, value) rows for each result dict of `runner`."""
    rows: list[tuple[str, str, float]] = []
    for result in results:
        name = str(result.get("set", "?"))
        if "point" in result:
            rows.append((name, "1-point mIoU (most confident)", result["point"]["miou"]))
            rows.append((name, "1-point mIoU (oracle of 3)", result["point"]["miou_oracle"]))
        if "clicks" in result:
            curve = result["clicks"]["miou_per_click"]
            for k in TABLE_CLICKS:
                if k <= len(curve):
                    rows.append((name, f"mIoU @ {k} clicks", curve[k - 1]))
            for key in ("noc@85", "noc@90", "nof@85", "nof@90"):
                rows.append((name, key.upper(), result["clicks"][key]))
        for key, label in (("box", "box mIoU"), ("noisy_box", "noisy-box mIoU")):
            if key in result:
                rows.append((name, label, result[key]["miou"]))
        if "AP50" in result:
            for key in ("AP", "AP50", "AP75"):
                rows.append((name, f"automatic {key}", result[key]))
            rows.extend(
                (name, f"automatic {k}", v) for k, v in result.items() if k.startswith("AR@")
            )
        for key in ("ODS", "OIS", "R50"):
            if key in result:
                rows.append((name, f"edges {key}", result[key]))
        if "ODS" in result:
            rows.append((name, "edges AP", result["AP"]))
    return rows


def to_markdown(rows: Sequence[tuple[str, str, float]]) -> str:
    lines = ["| set | metric | value |", "| --- | --- | ---: |"]
    lines += [f"| {s} | {m} | {_fmt(v, m)} |" for s, m, v in rows]
    return "\n".join(lines) + "\n"


def to_csv(rows: Sequence[tuple[str, str, float]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["set", "metric", "value"])
    writer.writerows(rows)
    return buffer.getvalue()


def _fmt(value: float, metric: str = "") -> str:
    if isinstance(value, int):
        return str(value)
    return f"{value:.2f}" if metric.startswith("NOC") else f"{value:.4f}"


def plot_clicks(results: Sequence[dict], path: str | os.PathLike[str]) -> Path | None:
    """PNG of mIoU vs number of clicks, one line per result with click curves."""
    curves = [(r.get("set", "?"), r["clicks"]["miou_per_click"]) for r in results if "clicks" in r]
    if not curves:
        return None
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5.5, 4))
    axes = figure.add_subplot()
    for name, curve in curves:
        axes.plot(range(1, len(curve) + 1), curve, marker="o", markersize=3, label=name)
    axes.set_xlabel("number of clicks")
    axes.set_ylabel("mIoU")
    axes.set_ylim(0, 1)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120)
    return write_bytes(path, buffer.getvalue())


def write_report(
    results: Sequence[dict], out_dir: str | os.PathLike[str], stem: str = "evaluation"
) -> list[Path]:
    """Write ``<stem>.json|.md|.csv`` (and ``<stem>_clicks.png``) into `out_dir`."""
    out = Path(out_dir)
    rows = summary_rows(results)
    written = [
        write_bytes(out / f"{stem}.json", (json.dumps(list(results), indent=2) + "\n").encode()),
        write_bytes(out / f"{stem}.md", to_markdown(rows).encode()),
        write_bytes(out / f"{stem}.csv", to_csv(rows).encode()),
    ]
    plot = plot_clicks(results, out / f"{stem}_clicks.png")
    if plot is not None:
        written.append(plot)
    return written
