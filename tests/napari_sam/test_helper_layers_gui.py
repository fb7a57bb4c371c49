"""Helper layers are robust (issue 13, item 3): the user may delete SAM points, SAM boxes,
SAM preview or the target labels at any time; a message says how to get each back, the next
click re-creates it, committing keeps working, and nothing raises into Qt.

Real viewer under Xvfb, real clicks on the canvas, real MobileSAM on a dsb2018 nuclei image
shown at scale 0.5 (re-created layers must be placed like the image too).
"""

from __future__ import annotations

import numpy as np
import pytest
from napari_sam_helpers import best_iou, click_world, interior_point, wait_idle

pytestmark = [pytest.mark.gui, pytest.mark.slow]

SCALE, TRANSLATE = (0.5, 0.5), (4.0, -6.0)


@pytest.fixture
def notices():
    """Messages of all notifications (info and above) shown during the test."""
    from napari.utils.notifications import notification_manager

    seen: list[str] = []

    def collect(notification) -> None:
        seen.append(str(notification.message))

    notification_manager.notification_ready.connect(collect)
    yield seen
    notification_manager.notification_ready.disconnect(collect)


def _placed_like_image(layer, image) -> bool:
    return np.allclose(layer.scale, image.scale) and np.allclose(layer.translate, image.translate)


def test_deleted_helper_layers_come_back(annotator, nuclei, press, qtbot, errors, notices):
    viewer, widget = annotator
    image, gt = nuclei
    layer = viewer.add_image(image, name="nuclei", scale=SCALE, translate=TRANSLATE)
    viewer.reset_view()
    ids, sizes = np.unique(gt[gt > 0], return_counts=True)
    nuclei_by_size = [int(i) for i in ids[np.argsort(-sizes)]]

    def click(obj: int) -> None:
        click_world(viewer, qtbot, layer.data_to_world(interior_point(gt == obj)))

    def preview_of(obj: int) -> np.ndarray:
        wait_idle(qtbot, widget)
        qtbot.waitUntil(lambda: None in widget.object_masks, timeout=60_000)
        mask = widget.object_masks[None]
        assert best_iou(mask, gt) > 0.6 and (mask & (gt == obj)).any(), obj
        return mask

    def commit() -> np.ndarray:
        press(viewer, "c")
        wait_idle(qtbot, widget)
        return viewer.layers["SAM objects"].data

    def removed(name: str) -> None:
        old = widget.helper(name) if name.startswith("SAM ") and name != "SAM objects" else None
        viewer.layers.remove(old if old is not None else viewer.layers[name])
        qtbot.waitUntil(lambda: any(f"{name!r}" in n for n in notices), timeout=5_000)
        print("notice:", notices[-1])

    objs = iter(nuclei_by_size)
    click(next(objs))
    preview_of(nuclei_by_size[0])
    assert commit().max() == 1

    # 1. SAM points: the next click on the image re-creates it with that click as its point
    old_points = widget.helper("SAM points")
    removed("SAM points")
    assert widget.helper("SAM points") is None
    assert "click on the image" in notices[-1]
    obj = next(objs)
    click(obj)
    points = widget.helper("SAM points")
    assert points is not None and points != old_points and len(points.data) == 1
    assert _placed_like_image(points, layer)
    preview_of(obj)
    assert commit().max() == 2
    assert viewer.layers.selection.active == points  # more clicks go to napari's add mode

    # 2. SAM boxes: re-created by the next click; a box drawn there segments
    removed("SAM boxes")
    obj = next(objs)
    click(obj)  # the points layer is active: napari adds the point, we re-create the boxes
    boxes = widget.helper("SAM boxes")
    assert boxes is not None and _placed_like_image(boxes, layer)
    preview_of(obj)
    press(viewer, "x")
    obj = next(objs)
    rows, cols = np.nonzero(gt == obj)
    corners = np.array([[rows.min() - 2, cols.min() - 2], [rows.max() + 2, cols.max() + 2]], float)
    boxes.add_rectangles(corners)
    preview_of(obj)
    assert commit().max() == 3

    # 3. SAM preview: it comes back with the next preview
    removed("SAM preview")
    obj = next(objs)
    click(obj)
    mask = preview_of(obj)
    preview = widget.helper("SAM preview")
    assert preview is not None and _placed_like_image(preview, layer)
    assert np.array_equal(preview.data > 0, mask)
    assert commit().max() == 4

    # 4. the target labels: the next commit makes a new layer (placed like the image)
    removed("SAM objects")
    assert "next commit" in notices[-1]
    obj = next(objs)
    click(obj)
    mask = preview_of(obj)
    labels = commit()
    new_target = viewer.layers["SAM objects"]
    assert labels.max() == 1 and np.array_equal(labels == 1, mask)
    assert _placed_like_image(new_target, layer)

    # 5. deleted while the preview is being computed: the result still arrives and shows
    obj = next(objs)
    click(obj)
    viewer.layers.remove(widget.helper("SAM preview"))
    mask = preview_of(obj)
    assert widget.helper("SAM preview") is not None
    assert np.array_equal(widget.helper("SAM preview").data > 0, mask)
    assert commit().max() == 2

    # 6. every key with every helper gone: re-created, no exception
    for name in ("SAM points", "SAM boxes", "SAM preview"):
        viewer.layers.remove(widget.helper(name))
    qtbot.wait(50)
    for key in "tnxsu":
        press(viewer, key)
        assert all(widget.helper(n) is not None for n in ("SAM points", "SAM boxes"))
    press(viewer, "t")
    assert widget.positive_mode
    assert viewer.layers["SAM objects"].data.max() == 1  # U took back the last commit only
    print("notices:", notices)
    assert not errors, errors


def test_undo_after_the_target_was_deleted_says_so(annotator, nuclei, press, qtbot, errors):
    viewer, widget = annotator
    image, gt = nuclei
    viewer.add_image(image, name="nuclei")
    ids, sizes = np.unique(gt[gt > 0], return_counts=True)
    widget.helper("SAM points").add([interior_point(gt == ids[np.argmax(sizes)])])
    wait_idle(qtbot, widget)
    qtbot.waitUntil(lambda: None in widget.object_masks, timeout=60_000)
    press(viewer, "c")
    viewer.layers.remove("SAM objects")
    qtbot.wait(50)
    press(viewer, "u")
    assert any("was removed" in e for e in errors)
    assert "SAM objects" not in viewer.layers
