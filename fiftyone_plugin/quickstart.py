"""The quick start's FiftyOne part: sample images → automatic masks → a FiftyOne dataset.

    .venv/bin/python -m samscope_fiftyone.quickstart [--out DIR] [--dataset NAME] [--grid N]

Writes a few images that ship with scikit-image (microscopy-like `coins`, `cell`, and the
`immunohistochemistry` slide) as PNG files into DIR/images, builds a persistent FiftyOne
dataset from those local files in FiftyOne's own (bundled) database, runs samscope's automatic
masks on every sample with `apply_model` (MobileSAM by default) into the `sam_auto` field, and
prints how to look at the result in the App. Rerunning rebuilds the dataset.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

SAMPLE_NAMES = ("coins", "cell", "immunohistochemistry")


def write_samples(folder: Path, names: tuple[str, ...] = SAMPLE_NAMES) -> list[Path]:
    """The bundled sample images as PNG files in `folder` (written once, reused)."""
    from sam_core.cli import load_sample
    from sam_core.image_io import write_png

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names:
        path = folder / f"{name}.png"
        if not path.is_file():
            write_png(path, np.asarray(load_sample(name)))
        paths.append(path)
    return paths


def build_dataset(name: str, paths: list[Path]):
    """A persistent dataset `name` (replaced if it exists) with one sample per image file."""
    import fiftyone as fo

    dataset = fo.Dataset(name, overwrite=True)
    dataset.persistent = True
    dataset.add_samples([fo.Sample(filepath=str(p.resolve())) for p in paths])
    return dataset


def run(out: Path, dataset_name: str, grid: int, model: str = "vit_t") -> dict:
    """Build the dataset and fill `sam_auto`; returns a summary (counts and seconds)."""
    from .model import SamscopeModel

    paths = write_samples(out / "images")
    dataset = build_dataset(dataset_name, paths)
    sam = SamscopeModel(model, mask_dir=str((out / "masks").resolve()), points_per_side=grid)
    start = time.perf_counter()
    dataset.apply_model(sam, label_field="sam_auto")
    seconds = time.perf_counter() - start
    per_sample = {
        Path(s.filepath).stem: len(s["sam_auto"].detections) if s["sam_auto"] else 0
        for s in dataset.select_fields("sam_auto")
    }
    return {"dataset": dataset.name, "samples": len(dataset), "masks": per_sample,
            "seconds": round(seconds, 1)}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("demo_out/fiftyone"))
    parser.add_argument("--dataset", default="samscope-quickstart")
    parser.add_argument("--grid", type=int, default=16, help="points per side (default 16)")
    parser.add_argument("--model", default="vit_t")
    args = parser.parse_args(argv)
    summary = run(args.out, args.dataset, args.grid, args.model)
    masks = ", ".join(f"{k} {v}" for k, v in summary["masks"].items())
    print(f"fiftyone dataset {summary['dataset']!r}: {summary['samples']} samples, "
          f"automatic masks in field 'sam_auto' ({masks}) in {summary['seconds']} s")  # fmt: skip
    print(
        'look at it:  .venv/bin/python -c "import fiftyone as fo; '
        f"fo.launch_app(fo.load_dataset('{summary['dataset']}')).wait()\""
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
