"""Automatic mask generation (paper §4, appendix B): grids, candidates, filters, NMS."""

from .candidates import MaskCandidates
from .generator import AutomaticMaskGenerator
from .grids import CropRegion, crop_regions, tile_regions, unit_grid
from .nms import box_nms
from .records import decode_segmentation, encode_rle, masks_to_label_image

__all__ = [
    "AutomaticMaskGenerator",
    "CropRegion",
    "MaskCandidates",
    "box_nms",
    "crop_regions",
    "decode_segmentation",
    "encode_rle",
    "masks_to_label_image",
    "tile_regions",
    "unit_grid",
]
