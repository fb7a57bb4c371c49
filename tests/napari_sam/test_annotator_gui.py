"""The interactive annotator in a real viewer (Xvfb) with real MobileSAM on real nuclei."""

from __future__ import annotations

import numpy as np
import pytest
from napari_sam_helpers import best_iou, interior_point, screenshot, wait_idle

pytestmark = [pytest.mark.gui, pytest.mark.slow]


def test_clicks_commit_nuclei_matching_ground_truth(annotator, nuclei, press, qtbot):
    viewer, widget = annotator
    image, gt = nuclei
    viewer.add_image(image, name="nuclei")
    assert widget.image_layer().name == "nuclei"
    ids, sizes = np.unique(gt[gt > 0], return_counts=True)
    chosen = ids[np.argsort(-sizes)][:4]
    points = widget.helper("SAM points")
    for obj in chosen:
        points.add([interior_point(gt == obj)])
        wait_idle(qtbot, widget)
        press(viewer, "c")
        wait_idle(qtbot, widget)
    labels = viewer.layers["SAM objects"].data
    committed = [i for i in np.unique(labels) if i > 0]
    assert len(committed) == len(chosen)
    ious = [best_iou(labels == i, gt) for i in committed]
    print("IoU per committed nucleus:", np.round(ious, 3))
    assert min(ious) > 0.6 and np.mean(ious) > 0.75
    screenshot(viewer, "napari_annotator")


def _wait_preview(qtbot, widget):
    wait_idle(qtbot, widget)
    qtbot.waitUntil(lambda: bool(widget.object_masks), timeout=60_000)
    return widget.object_masks[widget.current_z()]


def test_box_prompt_and_negative_click(annotator, nuclei, press, qtbot):
    viewer, widget = annotator
    image, gt = nuclei
    viewer.add_image(image, name="nuclei")
    ids, sizes = np.unique(gt[gt > 0], return_counts=True)
    big = ids[np.argmax(sizes)]
    rows, cols = np.nonzero(gt == big)
    box = [[rows.min() - 2, cols.min() - 2], [rows.max() + 2, cols.max() + 2]]
    widget.helper("SAM boxes").add_rectangles(np.array(box, float))
    mask = _wait_preview(qtbot, widget)
    box_iou = best_iou(mask, gt)
    print("box prompt IoU", round(box_iou, 3))
    assert box_iou > 0.75
    press(viewer, "x")
    assert len(widget.helper("SAM boxes").data) == 0 and not widget.object_masks

    # positive clicks on two nuclei give one mask covering both; the same click on the second
    # nucleus made negative (T) takes it out
    centroids = {i: np.array(np.nonzero(gt == i)).mean(axis=1) for i in ids}
    other = min(
        (i for i in ids if i != big), key=lambda i: np.linalg.norm(centroids[i] - centroids[big])
    )
    points = widget.helper("SAM points")
    points.add([interior_point(gt == big), interior_point(gt == other)])
    both = _wait_preview(qtbot, widget)
    cover = lambda m, i: (m & (gt == i)).sum() / (gt == i).sum()  # noqa: E731
    print("before negative: coverage", cover(both, big), cover(both, other))
    assert cover(both, big) > 0.7 and cover(both, other) > 0.7
    points.selected_data = {1}
    points.remove_selected()
    press(viewer, "t")
    assert not widget.positive_mode
    points.add([interior_point(gt == other)])
    assert points.features["positive"].tolist() == [True, False]
    qtbot.waitUntil(lambda: widget._shown_generation == widget._generation, timeout=60_000)
    after = _wait_preview(qtbot, widget)
    print("after negative: coverage", cover(after, big), cover(after, other))
    assert cover(after, other) < 0.2 and cover(after, big) > 0.7
    screenshot(viewer, "napari_negative_click")


def test_ambiguous_click_cycles_masks_and_undo(annotator, nuclei, press, qtbot):
    viewer, widget = annotator
    image, gt = nuclei
    viewer.add_image(image, name="nuclei")
    ids, sizes = np.unique(gt[gt > 0], return_counts=True)
    widget.helper("SAM points").add([interior_point(gt == ids[np.argmax(sizes)])])
    _wait_preview(qtbot, widget)
    assert len(widget.candidates.masks) == 3
    first = widget.candidates.choice
    press(viewer, "n")
    assert widget.candidates.choice == (first + 1) % 3
    assert np.array_equal(widget.object_masks[None], widget.candidates.masks[(first + 1) % 3])
    assert "▶" in widget.mask_label.text()
    press(viewer, "c")
    labels = viewer.layers["SAM objects"]
    assert labels.data.max() == 1
    press(viewer, "u")
    assert labels.data.max() == 0


def test_progress_bar_shows_only_for_a_preview_still_running_after_the_delay(
    annotator, nuclei, qtbot, monkeypatch
):
    """A preview shows the busy bar only once it has run for `PREVIEW_BUSY_DELAY_MS`; one
    that finishes first never shows it (no dock re-layout or repaints while the model runs)."""
    from samscope_napari import annotator as annotator_module

    viewer, widget = annotator
    image, gt = nuclei
    viewer.add_image(image, name="nuclei")
    shown: list[bool] = []
    set_visible = widget.progress.setVisible
    widget.progress.setVisible = lambda visible: (shown.append(visible), set_visible(visible))
    ids, sizes = np.unique(gt[gt > 0], return_counts=True)
    points = widget.helper("SAM points")

    # the delay passes while the first click's embedding is computed: the bar shows, then hides
    monkeypatch.setattr(annotator_module, "PREVIEW_BUSY_DELAY_MS", 1)
    points.add([interior_point(gt == ids[np.argmax(sizes)])])
    assert True not in shown  # not at once
    _wait_preview(qtbot, widget)
    assert True in shown and not widget.progress.isVisible()
    assert widget.status_label.text().startswith("preview ready")

    # a preview that ends before the delay never shows the bar, and leaves no timer running
    monkeypatch.setattr(annotator_module, "PREVIEW_BUSY_DELAY_MS", 60_000)
    shown.clear()
    points.add([interior_point(gt == ids[np.argsort(-sizes)[1]])])
    qtbot.waitUntil(lambda: widget._shown_generation == widget._generation, timeout=60_000)
    wait_idle(qtbot, widget)
    assert True not in shown and not widget.progress.isVisible()
    assert not widget._busy_timer.isActive()


def test_cache_folder_keeps_embeddings_on_disk(annotator, nuclei, qtbot, tmp_path):
    from sam_core.embedding_cache import EmbeddingCache
    from sam_core.session import MEMORY_CACHE, Session
    from samscope_napari.image_source import session_image

    viewer, widget = annotator
    image, gt = nuclei
    crop = np.ascontiguousarray(image[:128, :160])  # pixels no other test embedded
    viewer.add_image(crop, name="crop")
    widget.cache_edit.setText(str(tmp_path))
    widget.helper("SAM points").add([interior_point(gt[:128, :160] > 0)])
    _wait_preview(qtbot, widget)
    key = Session("vit_t", device=None).embedding_key(session_image(crop, False))
    path = tmp_path / f"{key}.zarr"  # the store is named by the pixels, not the layer
    assert path.is_dir()
    in_memory = MEMORY_CACHE.get(key)
    # a later session: the store reopens with matching provenance and gives the same features
    reopened = EmbeddingCache(path, widget_predictor(), on_mismatch="error").embedding(crop)
    assert np.array_equal(reopened.features.numpy(), in_memory.features.numpy())


def widget_predictor():
    from sam_core.session import get_predictor

    return get_predictor("vit_t", device=None)


def test_large_image_is_embedded_in_tiles(annotator, nuclei, qtbot):
    from sam_core.session import MEMORY_CACHE
    from sam_core.tiling import TiledEmbedding
    from samscope_napari.image_source import session_image

    viewer, widget = annotator
    image, gt = nuclei
    big, big_gt = np.tile(image, (2, 2)), np.tile(gt, (2, 2))
    big_gt[256:, 256:] += 1000  # the bottom-right copy's nuclei get their own ids
    big_gt[big_gt == 1000] = 0
    widget.session_options = {"max_side": 300, "tile_shape": (256, 256), "halo": (32, 32)}
    viewer.add_image(big, name="tiled")
    ids, sizes = np.unique(gt[gt > 0], return_counts=True)
    obj = ids[np.argmax(sizes)] + 1000
    y, x = interior_point(big_gt == obj)
    widget.helper("SAM points").add([[y, x]])
    mask = _wait_preview(qtbot, widget)
    assert mask.shape == big.shape
    truth = big_gt == obj
    iou = (mask & truth).sum() / (mask | truth).sum()
    print("tiled click IoU", round(iou, 3))
    assert iou > 0.7
    key = widget.session("vit_t").embedding_key(session_image(big, False))
    embedding = MEMORY_CACHE.get(key)
    assert isinstance(embedding, TiledEmbedding) and len(embedding.embeddings) == 4
