"""The quick start's FiftyOne job: bundled images into a dataset with automatic masks."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.fiftyone, pytest.mark.slow]


def test_quickstart_builds_a_dataset_with_automatic_masks(tmp_path, mobilesam_checkpoint, capsys):
    import fiftyone as fo

    from samscope_fiftyone.quickstart import SAMPLE_NAMES, main

    assert (
        main(["--out", str(tmp_path), "--dataset", "samscope-quickstart-test", "--grid", "8"]) == 0
    )
    out = capsys.readouterr().out
    assert "samscope-quickstart-test" in out and "sam_auto" in out
    dataset = fo.load_dataset("samscope-quickstart-test")
    assert dataset.persistent and len(dataset) == len(SAMPLE_NAMES)
    coins = dataset.match(fo.ViewField("filepath").ends_with("coins.png")).first()
    detections = coins["sam_auto"].detections
    assert len(detections) >= 5  # an 8×8 grid still finds several of the 24 coins
    assert all(d.mask is not None or d.mask_path for d in detections)
    assert all(0 < d["predicted_iou"] <= 1.2 for d in detections)
    dataset.delete()
