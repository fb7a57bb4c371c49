"""One call from an image to instance labels and records, for every front end.

    labels, records = segment_instances(session, image, z=None, mode="decoder")

Modes: ``decoder`` (the decoder's maps + seeded watershed, `postprocess`) and
``decoder+prompts`` (those objects as prompts for SAM's mask decoder, `prompting`). The
decoder's maps of the last few planes are kept in memory (`MAPS_CACHE`, keyed by the plane's
embedding key and the decoder file), so changing thresholds re-runs only the post-processing.

Records have the keys of `AutomaticMaskGenerator` records ("segmentation" in `output_mode`,
"area" pixels, "bbox" [x, y, w, h], "predicted_iou", "stability_score", "point_coords"
[[x, y]], "crop_box"), so the batch writers, napari and FiftyOne take them unchanged. For
``decoder`` mode "predicted_iou" is the object's mean foreground probability and
"stability_score" the `object_scores` analogue; for ``decoder+prompts`` they are SAM's.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..automatic.records import encode_rle_cropped, full_mask
from ..errors import SamscopeError
from ..mask_geometry import bounding_box
from .checkpoint import (
    InstanceDecoderError,
    LoadedDecoder,
    cached_decoder,
    check_encoder,
    decoder_beside,
)
from .inference import predict_maps
from .postprocess import InstanceThresholds, maps_to_labels, object_scores
from .prompting import PromptSettings, prompted_objects

MODES = ("decoder", "decoder+prompts")
_MAPS_KEEP = 8


class InstanceModeError(SamscopeError, ValueError):
    """An unknown instance segmentation mode."""


class _MapsCache:
    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[tuple, np.ndarray] = OrderedDict()

    def get(self, key: tuple) -> np.ndarray | None:
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        return None

    def put(self, key: tuple, maps: np.ndarray) -> None:
        self._items[key] = maps
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    def clear(self) -> None:
        self._items.clear()


MAPS_CACHE = _MapsCache(_MAPS_KEEP)


def resolve_decoder(
    session, decoder: LoadedDecoder | str | os.PathLike[str] | None = None
) -> LoadedDecoder:
    """The decoder to use with `session`: given, a file, or the one beside the session's
    model (its ``model.json``); checked against the session's encoder weights."""
    if decoder is None:
        found = decoder_beside(session.model)
        if found is None:
            raise InstanceDecoderError(
                f"no instance decoder for model {session.model!r}: train one with "
                "`samscope train-instance` and use --model <out>/model.pth, or give --decoder "
                "<out>/instance_decoder.pth"
            )
        decoder = found
    if not isinstance(decoder, LoadedDecoder):
        decoder = cached_decoder(Path(decoder), session.predictor.device)
    sha = session.model_id.split(":", 1)[0]
    check_encoder(decoder, sha, session.predictor.model_name)
    return decoder


def instance_maps(session, image, z: int | None, decoder: LoadedDecoder, progress=None):
    """(3, H, W) maps of plane `z` of `image` (a SessionImage), through `MAPS_CACHE`."""
    key = (session.embedding_key(image, z), _decoder_key(decoder))
    maps = MAPS_CACHE.get(key)
    if maps is None:
        embedding = session.embed(image, z, progress)
        with session.lock:
            maps = predict_maps(
                decoder, embedding, image.plane(z), image.channels, image.normalization
            )
        MAPS_CACHE.put(key, maps)
    return maps


def _decoder_key(decoder: LoadedDecoder) -> str:
    """Which decoder made some maps: its file and that file's modification time (a retrained
    decoder at the same path is another decoder), else the object's identity."""
    path = decoder.path
    if path is not None and Path(path).exists():
        return f"{Path(path).resolve()}@{Path(path).stat().st_mtime_ns}"
    return f"object-{id(decoder)}"


def segment_instances(
    session,
    image,
    z: int | None = None,
    mode: str = "decoder",
    decoder: LoadedDecoder | str | os.PathLike[str] | None = None,
    thresholds: InstanceThresholds | None = None,
    prompts: PromptSettings | None = None,
    output_mode: str = "binary_mask",
    progress=None,
) -> tuple[np.ndarray, list[dict]]:
    """((H, W) uint32 labels, records) of plane `z` of `image` (see the module docstring).

    thresholds: post-processing (default: the decoder's, tuned when it was trained).
    prompts: APG settings for ``decoder+prompts``. Raises InstanceModeError for an unknown
    mode, InstanceDecoderError for a missing decoder or one of another encoder.
    """
    from ..automatic import masks_to_label_image
    from ..session_image import SessionImage

    if mode not in MODES:
        raise InstanceModeError(f"unknown mode {mode!r}; instance modes are {', '.join(MODES)}")
    if output_mode not in ("binary_mask", "cropped_mask", "coco_rle"):
        raise ValueError(f"unknown output_mode {output_mode!r}")
    image = image if isinstance(image, SessionImage) else session.load(image)
    loaded = resolve_decoder(session, decoder)
    thresholds = thresholds or loaded.thresholds
    maps = instance_maps(session, image, z, loaded, progress)
    labels = maps_to_labels(maps, thresholds)
    hw = labels.shape
    if mode == "decoder":
        records = _decoder_records(maps, labels, output_mode)
        return masks_to_label_image(records, hw), records
    embedding = session.embed(image, z)
    objects = prompted_objects(session, embedding, labels, maps[2], prompts or PromptSettings())
    records = [
        _record(o.mask, o.box_xyxy, o.predicted_iou, o.stability, o.point_xy, hw, output_mode)
        for o in objects
    ]
    return masks_to_label_image(records, hw), records


def _decoder_records(maps: np.ndarray, labels: np.ndarray, output_mode: str) -> list[dict]:
    confidence, stability = object_scores(maps, labels)
    records = []
    slices = ndimage.find_objects(labels)
    positions = ndimage.maximum_position(maps[2], labels, np.arange(1, len(slices) + 1))
    for i, region in enumerate(slices):
        if region is None:
            continue
        local = labels[region] == i + 1
        c0, r0, c1, r1 = bounding_box(local)
        x0, y0 = region[1].start + c0, region[0].start + r0
        box = (x0, y0, region[1].start + c1, region[0].start + r1)
        point = (float(positions[i][1]), float(positions[i][0]))
        mask = local[r0:r1, c0:c1]
        records.append(
            _record(mask, box, confidence[i], stability[i], point, labels.shape, output_mode)
        )
    order = np.argsort([-r["predicted_iou"] for r in records], kind="stable")
    return [records[i] for i in order]


def _record(local, box, score, stability, point_xy, image_hw, output_mode) -> dict:
    x0, y0, x1, y1 = (int(v) for v in box)
    if output_mode == "cropped_mask":
        segmentation = local
    elif output_mode == "coco_rle":
        segmentation = encode_rle_cropped(local, (x0, y0, x1, y1), image_hw)
    else:
        segmentation = full_mask(local, (x0, y0, x1, y1), image_hw)
    return {
        "segmentation": segmentation,
        "area": int(np.count_nonzero(local)),
        "bbox": [x0, y0, x1 - x0, y1 - y0],
        "predicted_iou": float(score),
        "stability_score": float(stability),
        "point_coords": [[float(point_xy[0]), float(point_xy[1])]],
        "crop_box": [0, 0, int(image_hw[1]), int(image_hw[0])],
    }
