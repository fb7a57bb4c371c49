"""Fixtures for the napari plugin tests: real data, the shared MobileSAM, viewer helpers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

NUCLEI_IMAGE = "c043d5ac9dd46605"  # dsb2018_fluo_dev, 256x256, 13 nuclei


@pytest.fixture(scope="session")
def nuclei(nuclei_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """(image (256, 256) uint8, ground-truth instance labels (256, 256) uint16)."""
    import tifffile
    from PIL import Image

    folder = nuclei_dir
    with Image.open(folder / "images" / f"{NUCLEI_IMAGE}.png") as im:
        image = np.asarray(im)
    labels = tifffile.imread(folder / "labels" / f"{NUCLEI_IMAGE}.tif")
    return image, labels


@pytest.fixture(scope="session")
def volume(shared_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """stardist's synthetic 3-D nuclei: (31, 61, 57) uint16 image and its instance labels."""
    import tifffile

    folder = shared_dir / "data" / "stardist_pkg"
    return (
        tifffile.imread(folder / "images" / "img3d.tif"),
        tifffile.imread(folder / "labels" / "img3d.tif"),
    )


@pytest.fixture(scope="session")
def shared_predictor(vit_t_model):
    """The session's MobileSAM registered as the plugin's "vit_t" predictor (loaded once)."""
    from sam_core import Predictor
    from sam_core.session import use_predictor

    predictor = Predictor(vit_t_model, device="cpu")
    use_predictor("vit_t", predictor)
    return predictor


@pytest.fixture
def press(qtbot):
    """press(viewer, key): a key press through the viewer's key bindings, as from the canvas."""

    def _press(viewer, key: str) -> None:
        handled = viewer.window._qt_viewer._key_map_handler.press_key(key)
        assert handled, f"key {key!r} is not bound"
        qtbot.wait(10)

    return _press


@pytest.fixture
def annotator(make_napari_viewer, shared_predictor, qtbot):
    """(viewer, AnnotatorWidget) opened through the plugin's manifest."""
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1200, 720)
    _, widget = viewer.window.add_plugin_dock_widget("samscope", "Segment Anything")
    yield viewer, widget
    widget.cancel()
    qtbot.waitUntil(
        lambda: widget._preview_worker is None and widget._long_worker is None, timeout=60_000
    )


@pytest.fixture
def errors():
    """Messages of the error notifications shown during the test."""
    from napari.utils.notifications import NotificationSeverity, notification_manager

    seen: list[str] = []

    def collect(notification) -> None:
        if notification.severity >= NotificationSeverity.ERROR:
            seen.append(str(notification.message))

    notification_manager.notification_ready.connect(collect)
    yield seen
    notification_manager.notification_ready.disconnect(collect)
