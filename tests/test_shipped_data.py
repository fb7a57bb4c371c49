"""The dsb2018 subset shipped in tests/data: what the `nuclei_dir` fixture falls back to on a
clone without ../shared. It must stay small, CC0, self-consistent, and byte-identical to the
shared set it was copied from, so tests see the same pixels either way."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

SHIPPED = Path(__file__).parent / "data" / "dsb2018_fluo_dev"
MAX_BYTES = 1_000_000


def _manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text(encoding="utf-8"))


def test_shipped_subset_is_small_cc0_and_matches_its_manifest() -> None:
    manifest = _manifest(SHIPPED)
    assert manifest["license"].startswith("CC0")
    items = manifest["items"]
    assert manifest["n_images"] == len(items)
    assert manifest["n_instances_total"] == sum(item["n_instances"] for item in items)
    listed = {item["image"] for item in items} | {item["label"] for item in items}
    on_disk = {str(p.relative_to(SHIPPED)) for p in SHIPPED.glob("*/*") if p.is_file()}
    assert on_disk == listed
    assert sum(p.stat().st_size for p in SHIPPED.rglob("*") if p.is_file()) < MAX_BYTES
    for item in items:
        with Image.open(SHIPPED / item["image"]) as image:
            assert image.size[::-1] == tuple(item["shape"]), item["name"]
        labels = tifffile.imread(SHIPPED / item["label"])
        assert labels.shape == tuple(item["shape"]), item["name"]
        assert len(np.unique(labels[labels > 0])) == item["n_instances"], item["name"]
    for line in (SHIPPED / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        assert hashlib.sha256((SHIPPED / name).read_bytes()).hexdigest() == digest, name


def test_shipped_subset_is_a_copy_of_the_shared_set(nuclei_dir: Path) -> None:
    """Runs where ../shared exists (then `nuclei_dir` is the full set); skips otherwise."""
    if nuclei_dir == SHIPPED:
        pytest.skip("shared dsb2018_fluo_dev set missing: nothing to compare the copy with")
    full = _manifest(nuclei_dir)
    shipped = _manifest(SHIPPED)
    order = [item["name"] for item in full["items"]]
    names = [item["name"] for item in shipped["items"]]
    assert names == sorted(names, key=order.index), "items must keep the full set's order"
    by_name = {item["name"]: item for item in full["items"]}
    for item in shipped["items"]:
        assert item == by_name[item["name"]]
        for key in ("image", "label"):
            assert (SHIPPED / item[key]).read_bytes() == (nuclei_dir / item[key]).read_bytes()
    assert {k: v for k, v in shipped.items() if k in ("source", "license", "label_format")} == {
        k: full[k] for k in ("source", "license", "label_format")
    }
