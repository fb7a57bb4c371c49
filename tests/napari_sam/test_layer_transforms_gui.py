"""napari layer transforms (issue 13): an image shown with a scale or translate is segmented
at the clicked pixel, and every layer samscope makes is drawn over it.

Real viewer under Xvfb, real clicks on the canvas, real MobileSAM on a dsb2018 nuclei image.
The reference is `sam_core.Predictor` on the same array at the same data pixel.
"""

from __future__ import annotations

import numpy as np
import pytest
from napari_sam_helpers import click_world, interior_point, mask_iou, wait_idle

from samscope_napari.candidates import default_choice

pytestmark = [pytest.mark.gui, pytest.mark.slow]

CASES = {
    "plain": {},
    "scaled": {"scale": (0.5, 0.5)},
    "translated": {"translate": (10.0, 20.0)},
    "scaled_translated": {"scale": (0.5, 0.5), "translate": (-30.0, 45.0)},
    "stack": {"scale": (2.0, 0.5, 0.5)},  # slice 1 of 3 is the image
}


@pytest.fixture(scope="module")
def api(vit_t_model, nuclei):
    """predict(x, y) → (masks (3, H, W), scores) of sam_core.Predictor on the nuclei array."""
    from sam_core import Predictor

    image, _ = nuclei
    predictor = Predictor(vit_t_model, device="cpu")
    predictor.set_image(image)

    def predict(x: float, y: float) -> tuple[np.ndarray, np.ndarray]:
        masks, scores, _ = predictor.predict(points=[[x, y]], labels=[1])
        return masks, scores

    return predict


@pytest.fixture(scope="module")
def target(api, nuclei) -> tuple[int, tuple[float, float]]:
    """(ground-truth id, interior (y, x)) of a large nucleus the API segments with IoU ≥ 0.9."""
    _, gt = nuclei
    ids, sizes = np.unique(gt[gt > 0], return_counts=True)
    for obj in ids[np.argsort(-sizes)]:
        y, x = interior_point(gt == obj)
        masks, scores = api(x, y)
        if mask_iou(masks[default_choice(masks, scores)], gt == obj) >= 0.9:
            return int(obj), (y, x)
    pytest.fail("no nucleus reaches IoU 0.9 through the API")


def _placement(layer) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(layer.scale), np.asarray(layer.translate)


def _assert_placed_like(layer, image) -> None:
    scale, translate = _placement(layer)
    assert np.allclose(scale, image.scale), (layer.name, scale, image.scale)
    assert np.allclose(translate, image.translate), (layer.name, translate, image.translate)
    assert np.allclose(layer.affine.affine_matrix, image.affine.affine_matrix), layer.name


@pytest.mark.parametrize("case", list(CASES))
def test_click_at_world_position_segments_that_pixel(
    case, annotator, nuclei, api, target, press, qtbot, errors
):
    viewer, widget = annotator
    image, gt = nuclei
    obj, (y, x) = target
    kwargs = CASES[case]
    if case == "stack":
        data = np.stack([np.flipud(image), image, np.fliplr(image)])
        data_point, z = (1.0, y, x), 1
    else:
        data, data_point, z = image, (y, x), None
    layer = viewer.add_image(data, name="nuclei", **kwargs)
    assert widget.image_layer() == layer  # the widget holds napari's proxies: compare by ==
    helpers = [widget.helper(n) for n in ("SAM points", "SAM boxes", "SAM preview")]
    for helper in helpers:
        _assert_placed_like(helper, layer)

    world = layer.data_to_world(data_point)
    if z is not None:
        viewer.dims.set_point(0, world[0])  # show slice 1 (world z = 2 with a z scale of 2)
        assert widget.current_z() == 1
    viewer.reset_view()
    points = widget.helper("SAM points")  # active, in add mode, once the image is added
    qtbot.waitUntil(lambda: viewer.layers.selection.active == points, timeout=5_000)
    click_world(viewer, qtbot, world)
    qtbot.waitUntil(lambda: len(points.data) == 1, timeout=10_000)
    clicked = np.asarray(points.data[0], dtype=float)  # image data pixels (same placement)
    print(case, "clicked data pixel", clicked, "wanted", data_point)
    assert np.abs(clicked - np.asarray(data_point)).max() < 0.5
    wait_idle(qtbot, widget)
    qtbot.waitUntil(lambda: z in widget.object_masks, timeout=60_000)

    api_masks, _ = api(clicked[-1], clicked[-2])
    ious = [mask_iou(a, b) for a, b in zip(widget.candidates.masks, api_masks, strict=True)]
    shown = widget.object_masks[z]
    gt_iou = mask_iou(shown, gt == obj)
    print(case, "IoU widget vs API per candidate", np.round(ious, 4), "vs ground truth", gt_iou)
    assert min(ious) >= 0.99
    assert gt_iou >= 0.9
    preview = widget.helper("SAM preview").data
    assert np.array_equal((preview if z is None else preview[z]) > 0, shown)

    press(viewer, "c")
    labels = viewer.layers["SAM objects"]
    _assert_placed_like(labels, layer)
    committed = labels.data == 1
    assert mask_iou(committed if z is None else committed[z], shown) == 1.0
    assert not errors


def test_users_own_points_layer_without_transform(annotator, nuclei, target, qtbot, errors):
    """A points layer the user made (scale 1) under the helper's name is adopted; its world
    positions are mapped onto the scaled image's pixels."""
    viewer, widget = annotator
    image, gt = nuclei
    obj, (y, x) = target
    layer = viewer.add_image(image, name="nuclei", scale=(0.5, 0.5), translate=(5.0, 7.0))
    viewer.layers.remove(widget.helper("SAM points"))
    qtbot.wait(50)
    own = viewer.add_points(name="SAM points", ndim=2)  # no scale: data = world coordinates
    own.mode = "add"
    viewer.layers.selection.active = own
    viewer.reset_view()
    click_world(viewer, qtbot, layer.data_to_world((y, x)))
    assert widget.helper("SAM points") == own and len(own.data) == 1
    assert np.allclose(own.scale, 1.0)  # the user's layer keeps its own placement
    wait_idle(qtbot, widget)
    qtbot.waitUntil(lambda: None in widget.object_masks, timeout=60_000)
    prompts = widget.current_prompts()
    print("user layer point", own.data[0], "→ image pixel (x, y)", prompts.points_xy[0])
    assert np.abs(prompts.points_xy[0] - [x, y]).max() < 0.5
    assert mask_iou(widget.object_masks[None], gt == obj) >= 0.9
    assert not errors


def test_helpers_follow_the_image_when_it_moves(annotator, nuclei, qtbot):
    viewer, widget = annotator
    image, _ = nuclei
    layer = viewer.add_image(image, name="nuclei")
    layer.scale = (0.25, 0.5)
    layer.translate = (3.0, -4.0)
    for name in ("SAM points", "SAM boxes", "SAM preview"):
        _assert_placed_like(widget.helper(name), layer)


def test_automatic_output_is_placed_like_the_image(make_napari_viewer, shared_predictor, qtbot):
    viewer = make_napari_viewer(show=True)
    _, widget = viewer.window.add_plugin_dock_widget("samscope", "Automatic segmentation")
    rng = np.random.default_rng(0)
    image = np.zeros((96, 128), np.float32)
    image[20:50, 30:70] = 1.0  # one bright block on noise: a quick, small run
    image += rng.normal(0, 0.05, image.shape).astype(np.float32)
    layer = viewer.add_image(image, name="blocks", scale=(0.5, 2.0), translate=(10.0, -5.0))
    widget.image_combo.setCurrentText("blocks")
    widget.points_spin.setValue(4)
    widget.run()
    qtbot.waitUntil(lambda: "SAM automatic" in viewer.layers, timeout=180_000)
    output = viewer.layers["SAM automatic"]
    _assert_placed_like(output, layer)
    assert output.data.shape == image.shape


# ---------------------------------------------------------------- no viewer: the mapping
def test_transform_mapping_matches_napari():
    from napari.layers import Image, Points

    from samscope_napari.layer_transforms import (
        same_placement,
        to_image_pixels,
        transform_kwargs,
    )

    image = Image(
        np.zeros((4, 40, 50)), scale=(2.0, 0.5, 0.25), translate=(1.0, 10.0, -3.0), rotate=20
    )
    helper = Points(np.zeros((0, 3)), **transform_kwargs(image, 3))
    assert same_placement(helper, image, 3)
    pixels = np.array([[1.0, 12.0, 30.0], [3.0, 0.0, 49.0]])
    assert np.array_equal(to_image_pixels(pixels, helper, image, 3, (0, 0, 0)), pixels)

    own = Points(np.zeros((0, 3)))  # the user's layer: data = world coordinates
    world = np.array([image.data_to_world(p) for p in pixels])
    mapped = to_image_pixels(world, own, image, 3, (0, 0, 0))
    assert np.allclose(mapped, pixels)
    flat = Points(np.zeros((0, 2)))  # 2-D points over a stack: z from the viewer position
    mapped = to_image_pixels(world[:, 1:], flat, image, 3, tuple(world[0]))
    assert np.allclose(mapped[0], pixels[0])

    channels = Image(np.zeros((40, 50, 5)), scale=(0.5, 0.25, 1.0), translate=(2.0, 3.0, 0.0))
    kwargs = transform_kwargs(channels, 2)
    assert np.allclose(kwargs["scale"], (0.5, 0.25)) and np.allclose(kwargs["translate"], (2, 3))
    assert same_placement(Points(np.zeros((0, 2)), **kwargs), channels, 2)
