"""The same files through napari as through the API: a real viewer opens them with samscope's
reader, the annotator segments a click, and the mask equals the core session's."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from napari_sam_helpers import wait_idle
from PIL import Image

from sam_core.mask_geometry import interior_point, mask_iou
from sam_core.session import Session

pytestmark = [pytest.mark.gui, pytest.mark.slow]


def _preview(qtbot, widget, point_yx):
    widget.helper("SAM points").add([point_yx])
    wait_idle(qtbot, widget)
    qtbot.waitUntil(lambda: bool(widget.object_masks), timeout=60_000)
    return widget.object_masks[widget.current_z()]


def _open(viewer, path):
    """Open `path` with samscope's reader (as File > Open with the plugin chosen)."""
    return viewer.open(str(path), plugin="samscope")


def test_exif_oriented_jpeg(annotator, qtbot, tmp_path):
    viewer, widget = annotator
    yy, xx = np.mgrid[0:360, 0:240]
    truth = (xx - 170) ** 2 + (yy - 260) ** 2 < 40**2  # where the viewer shows the disc
    stored = np.rot90(np.where(truth, 230, 30).astype(np.uint8), k=1)  # 360 wide, 240 tall
    picture = Image.fromarray(np.ascontiguousarray(stored)).convert("RGB")
    exif = picture.getexif()
    exif[274] = 6
    path = tmp_path / "phone.jpg"
    picture.save(path, exif=exif, quality=95)

    (layer,) = _open(viewer, path)
    assert layer.data.shape[:2] == (360, 240) and layer.rgb
    mask = _preview(qtbot, widget, [260, 170])
    session = Session("vit_t")
    api, _ = session.predict_best(session.embed(session.load(path)), points=[[170, 260]])
    assert mask_iou(mask, api) >= 0.99
    assert mask_iou(mask, truth) > 0.9


def test_dim_16_bit_nuclei(annotator, qtbot, tmp_path, nuclei_dir):
    viewer, widget = annotator
    folder = nuclei_dir
    name = sorted((folder / "images").glob("*.png"))[0].stem
    gray = np.asarray(Image.open(folder / "images" / f"{name}.png").convert("L"), np.float64)
    dim = (900 + gray / 255 * 510).astype(np.uint16)  # values 900..1410
    gt = tifffile.imread(folder / "labels" / f"{name}.tif")
    path = tmp_path / "dim16.tif"
    tifffile.imwrite(path, dim)

    (layer,) = _open(viewer, path)
    assert layer.data.dtype == np.uint16
    session = Session("vit_t")
    embedding = session.embed(session.load(path))
    ids, sizes = np.unique(gt[gt > 0], return_counts=True)
    obj = ids[np.argmax(sizes)]
    x, y = interior_point(gt == obj)
    mask = _preview(qtbot, widget, [y, x])
    api, _ = session.predict_best(embedding, points=[[x, y]])
    assert mask_iou(mask, api) >= 0.99
    assert mask_iou(mask, gt == obj) > 0.8


def test_five_channel_tiff_opens_as_channels(annotator, qtbot, five_channel_tiff):
    viewer, widget = annotator
    path, truth = five_channel_tiff

    layers = _open(viewer, path)
    assert [ly.data.shape for ly in layers] == [(96, 128)] * 5  # channels, not 96 slices
    widget.image_combo.setCurrentText("five ch2")
    assert widget.image_layer().name == "five ch2"
    mask = _preview(qtbot, widget, [45, 70])
    session = Session("vit_t")
    api, _ = session.predict_best(session.embed(session.load(path, channels=2)), [[70, 45]])
    assert mask_iou(mask, api) >= 0.99
    assert mask_iou(mask, truth) > 0.9
