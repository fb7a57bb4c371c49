"""How a mask was made: one versioned record per mask, for every front end (the paper's §4
data engine keeps masks, prompts and models together; a mask that forgets how it was made
can't be reproduced or retrained on with confidence).

    record = prompted_provenance(session, image, z=None, points_xy=[[40, 60]],
                                 point_labels=[1], box_xyxy=None, mask_input=None,
                                 multimask_output=True, mask_index=2, mask=mask)
    write_sidecar("mask.provenance.json", [record])
    records = read_sidecar("mask.provenance.json")       # ProvenanceError if unusable
    mask = sam_core.replay.replay(records[0], image)     # the same mask, bit for bit

The schema (``SCHEMA`` / ``SCHEMA_VERSION``) is documented field by field in
docs/provenance.md. Coordinates are pixels of the original image plane, (x, y) = (column,
row). Records are plain JSON once `to_dict` is called; CLI sidecars, COCO annotations'
``samscope_provenance``, FiftyOne detections' ``samscope_provenance`` attribute and napari
layer metadata all carry the same dict.
"""

from .builders import (
    automatic_provenance,
    generator_settings,
    manual_provenance,
    model_provenance,
    predict_best_recorded,
    preprocessing_provenance,
    prompted_provenance,
    refined_provenance,
)
from .record import (
    FLAGS,
    KINDS,
    SCHEMA,
    SCHEMA_VERSION,
    SIDECAR_SUFFIX,
    MaskProvenance,
    array_digest,
    mask_digest,
    mask_summary,
)
from .sidecars import read_json, read_sidecar, records_from_json, sidecar_path, write_sidecar

__all__ = [
    "FLAGS",
    "KINDS",
    "SCHEMA",
    "SCHEMA_VERSION",
    "SIDECAR_SUFFIX",
    "MaskProvenance",
    "array_digest",
    "automatic_provenance",
    "generator_settings",
    "manual_provenance",
    "mask_digest",
    "mask_summary",
    "model_provenance",
    "predict_best_recorded",
    "preprocessing_provenance",
    "prompted_provenance",
    "read_json",
    "read_sidecar",
    "records_from_json",
    "refined_provenance",
    "sidecar_path",
    "write_sidecar",
]
