"""Plugin logic that needs no viewer: commit without overwrite, undo, prompts, image layouts."""

from __future__ import annotations

import numpy as np
import pytest

from sam_core.errors import ImageError, PromptError
from samscope_napari.annotation import UndoStack, commit_object, next_free_id, undo_commit
from samscope_napari.image_source import image_plane, layout_of
from samscope_napari.prompts import slice_prompts


def _disk(shape, cy, cx, r):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def test_commit_keeps_existing_objects_unless_overwrite_and_undo_restores():
    labels = np.zeros((40, 50), np.uint32)
    first = commit_object(labels, {None: _disk(labels.shape, 20, 20, 8)})
    assert first.label_id == 1 and (labels == 1).sum() == _disk(labels.shape, 20, 20, 8).sum()
    before = labels.copy()
    second_mask = _disk(labels.shape, 20, 28, 8)
    second = commit_object(labels, {None: second_mask})
    assert second.label_id == 2
    assert np.array_equal(labels[before == 1], before[before == 1])  # object 1 untouched
    assert (labels == 2).sum() == (second_mask & (before == 0)).sum()
    third = commit_object(labels, {None: second_mask}, overwrite=True)
    assert (labels[second_mask] == 3).all()
    undo_commit(labels, third)
    undo_commit(labels, second)
    assert np.array_equal(labels, before)
    assert next_free_id(labels) == 2


def test_commit_into_stack_planes_and_refusals():
    labels = np.zeros((5, 30, 30), np.uint16)
    labels[2, :10, :10] = 7
    record = commit_object(labels, {1: _disk((30, 30), 15, 15, 5), 3: _disk((30, 30), 15, 15, 3)})
    assert record.label_id == 8 and set(np.unique(labels[[1, 3]])) == {0, 8}
    with pytest.raises(PromptError, match="existing objects"):
        commit_object(labels, {2: np.pad(np.ones((10, 10), bool), ((0, 20), (0, 20)))})
    with pytest.raises(PromptError, match="does not fit"):
        commit_object(labels, {1: np.ones((10, 10), bool)})
    with pytest.raises(PromptError, match="outside"):
        commit_object(labels, {9: np.ones((30, 30), bool)})
    assert (labels == 8).sum() == record.n_pixels  # failed commits changed nothing


def test_undo_stack_is_lifo_and_bounded():
    stack = UndoStack(depth=2)
    for item in "abc":
        stack.push(item)
    assert len(stack) == 2 and stack.pop() == "c" and stack.pop() == "b" and stack.pop() is None


def test_slice_prompts_convert_yx_to_xy_filter_slice_and_reject_outside():
    points = np.array([[2, 10, 20], [2, 11, 21], [3, 5, 5]], float)
    box = np.array([[2, 4, 6], [2, 4, 30], [2, 25, 30], [2, 25, 6]], float)
    prompts = slice_prompts(points, [True, False, True], [box], z=2, image_hw=(40, 50))
    assert prompts.points_xy.tolist() == [[20, 10], [21, 11]]
    assert prompts.labels.tolist() == [1, 0]
    assert prompts.box_xyxy.tolist() == [6, 4, 30, 25]
    assert not prompts.ambiguous
    only_other = slice_prompts(points, [True, False, True], [box], z=3, image_hw=(40, 50))
    assert only_other.ambiguous and only_other.box_xyxy is None
    with pytest.raises(PromptError, match=r"outside the image of 50×40"):
        slice_prompts(np.array([[10, 60]]), [True], [], z=None, image_hw=(40, 50))
    assert slice_prompts(np.zeros((0, 2)), [], [], None, (40, 50)).empty


def test_layouts_planes_and_channel_choice():
    assert layout_of((64, 80), rgb=False).labels_shape == (64, 80)
    assert layout_of((64, 80, 4), rgb=True).labels_shape == (64, 80)
    assert layout_of((7, 64, 80), rgb=False).labels_shape == (7, 64, 80)
    with pytest.raises(ImageError, match="choose a channel"):
        layout_of((256, 256, 5), rgb=False)
    assert layout_of((256, 256, 5), rgb=False, channel=2).labels_shape == (256, 256)
    with pytest.raises(ImageError, match="channel 9 does not exist"):
        layout_of((256, 256, 5), rgb=False, channel=9)
    with pytest.raises(ImageError, match="one stack axis"):
        layout_of((2, 3, 64, 80), rgb=False)
    rgba = np.random.default_rng(0).integers(0, 255, (16, 16, 4), dtype=np.uint8)
    assert image_plane(rgba, True, None).shape == (16, 16, 3)
    five = np.random.default_rng(0).random((32, 32, 5))
    assert np.array_equal(image_plane(five, False, None, channel=4), five[..., 4])
    stack = np.arange(3 * 8 * 8).reshape(3, 8, 8)
    assert np.array_equal(image_plane(stack, False, 1), stack[1])
