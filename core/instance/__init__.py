"""Automatic instance segmentation with a decoder trained on SAM's image embeddings.

Segment-everything by a point grid (paper §4) is slow and mediocre on crowded small objects
such as nuclei. This subpackage adds micro-sam's idea ("AIS"/"APG"), written from the idea: a
light decoder reads the frozen encoder's embedding (plus a few full-resolution features of the
image itself) and predicts, per pixel, foreground probability and two normalised distance
maps; a seeded watershed turns them into objects. Optionally each object becomes one prompt
for SAM's own mask decoder.

Use it through the session (every front end does)::

    from sam_core.session import Session
    session = Session("runs/nuclei/model.pth")        # decoder listed in runs/nuclei/model.json
    labels, records = session.instance_segment(image, mode="decoder")

or train one (``samscope train-instance --data DIR --out DIR``)::

    from sam_core.instance import TrainConfig, prepare_items, train_decoder
    items = prepare_items(session, samples, work_side=1024)
    result = train_decoder(session, items[:40], items[40:], "runs/nuclei", TrainConfig())

Public API:

* `segment_instances` (what `Session.instance_segment` calls): image → ((H, W) uint32
  labels, records like `AutomaticMaskGenerator`'s); modes ``decoder`` and
  ``decoder+prompts`` (`MODES`).
* `instance_maps` / `predict_maps`: the network's (3, H, W) foreground / centre / boundary
  probabilities (cached per plane in `MAPS_CACHE`); `maps_to_labels` with
  `InstanceThresholds`: the watershed alone, no network (re-run it when thresholds change).
* `PromptSettings`: automatic prompt generation (point or box per object, SAM's filters, NMS).
* `load_decoder`, `save_decoder`, `decoder_beside`, `LoadedDecoder`, `InstanceDecoderError`:
  decoder files (``instance_decoder.pth``) and the ``model.json`` entry that lists them.
* `TrainConfig`, `prepare_items`, `train_decoder`, `evaluate_items`: training and validation;
  `score_labels` / `segmentation_accuracy`: AP (pycocotools) and mean segmentation accuracy.
* `InstanceDecoder`, `DecoderConfig`: the network; `instance_targets`: its training targets.

Shapes and units: maps and labels are at the image's own (H, W) pixels; points (x, y) =
(column, row); boxes in records are COCO [x, y, w, h]. Tiled planes (above the session's
``max_side``) run the decoder per tile and stitch inner boxes before one watershed
(`inference`); stacks are segmented slice by slice (pass ``z``).
"""

from .checkpoint import (
    DECODER_FILE,
    InstanceDecoderError,
    LoadedDecoder,
    decoder_beside,
    load_decoder,
    save_decoder,
)
from .data import DecoderItem, EmptyLabelsWarning, prepare_items
from .inference import predict_maps
from .metrics import score_labels, segmentation_accuracy
from .network import DecoderConfig, InstanceDecoder
from .postprocess import InstanceThresholds, maps_to_labels, object_scores
from .prompting import PromptSettings
from .segment import MAPS_CACHE, MODES, InstanceModeError, instance_maps, segment_instances
from .targets import instance_targets
from .training import TrainConfig, TrainResult, evaluate_items, train_decoder

__all__ = [
    "DECODER_FILE",
    "MAPS_CACHE",
    "MODES",
    "DecoderConfig",
    "DecoderItem",
    "EmptyLabelsWarning",
    "InstanceDecoder",
    "InstanceDecoderError",
    "InstanceModeError",
    "InstanceThresholds",
    "LoadedDecoder",
    "PromptSettings",
    "TrainConfig",
    "TrainResult",
    "decoder_beside",
    "evaluate_items",
    "instance_maps",
    "instance_targets",
    "load_decoder",
    "maps_to_labels",
    "object_scores",
    "predict_maps",
    "prepare_items",
    "save_decoder",
    "score_labels",
    "segment_instances",
    "segmentation_accuracy",
    "train_decoder",
]
