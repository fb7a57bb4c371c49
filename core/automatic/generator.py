"""Automatic mask generation: the paper's fully automatic stage (§4, appendix B).

    amg = AutomaticMaskGenerator(load_model("vit_t"), points_per_side=32)
    records = amg.generate(image)                     # list of dicts, like the official generator
    candidates = amg.compute_candidates(image)        # the expensive pass, once
    records = amg.select(candidates, pred_iou_thresh=0.8)   # the cheap pass, as often as you like

The expensive pass embeds each region (the image, its crops, or the tiles of a large image),
decodes the point grid in large batches, and drops candidates on the predicted IoU *before* any
upsampling. Survivors are upsampled only inside the window where their logits can matter (see
`windowed_logits`), which also gives the exact stability score; each mask is kept cut to its
bounding box. The cheap pass applies the thresholds, the near-whole-image filter, the
crop-edge filter, NMS within and across regions, and the small-region postprocessing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from ..device import Precision
from ..embedding import ImageEmbedding
from ..errors import EmbeddingError, ImageError
from ..image_input import Normalization, as_rgb_uint8_or_float
from ..mask_geometry import bounding_box
from ..modeling.sam import SamModel
from ..predictor import Predictor
from ..prompts import build_prompts
from ..tiling import (
    DEFAULT_TILE_SHAPE,
    TiledEmbedding,
    TileLayout,
    TileSource,
    embed_tile,
    layout_for,
)
from .candidates import CandidateCollector, MaskCandidates
from .grids import CropRegion, crop_regions, tile_regions
from .nms import box_nms
from .postprocess import remove_small_regions
from .records import OUTPUT_MODES, encode_rle_cropped, full_mask
from .windowed_logits import WindowedUpsampler

Progress = Callable[[int, int], None]

# A box edge within this many pixels of a crop edge counts as touching it (as in the official code).
EDGE_TOLERANCE = 20


class AutomaticMaskGenerator:
    """Segment everything in an image from a grid of point prompts.

    Parameters keep the official generator's names and defaults:
    points_per_side: grid is n × n points on the image (and on each tile of a large image).
    points_per_batch: prompts per decoder pass. pred_iou_thresh: keep masks whose predicted IoU
    is above this. stability_score_thresh / stability_score_offset: keep masks whose IoU between
    the logit > +offset and logit > -offset masks reaches the threshold. box_nms_thresh: NMS
    within a region. crop_n_layers, crop_nms_thresh, crop_overlap_ratio,
    crop_n_points_downscale_factor: zoomed crops (see `grids`). point_grids: optional list of
    (n, 2) xy fractions in [0, 1], one per crop layer, replacing the regular grids.
    min_mask_region_area: fill holes and remove islands smaller than this (pixels; 0 = off).
    output_mode: "binary_mask" ((H, W) bool), "coco_rle", or "cropped_mask" (bool mask of the
    bbox only: what large images need).

    Ours: max_mask_fraction drops masks covering at least this fraction of the image (the
    paper's third filter; None disables it, as the official code has no such filter).
    tile_shape / halo / tiling_threshold: images with a side above tiling_threshold pixels are
    embedded tile by tile (tile_shape, yx pixels) with halo pixels of context; masks are merged
    across seams by NMS, and masks cut by a tile's outer edge are dropped (the neighbouring tile
    sees them whole). iou_floor / stability_floor: the loosest thresholds `select` can apply
    later without recomputing.
    """

    def __init__(
        self,
        model: SamModel | Predictor,
        points_per_side: int | None = 32,
        points_per_batch: int = 64,
        pred_iou_thresh: float = 0.88,
        stability_score_thresh: float = 0.95,
        stability_score_offset: float = 1.0,
        box_nms_thresh: float = 0.7,
        crop_n_layers: int = 0,
        crop_nms_thresh: float = 0.7,
        crop_overlap_ratio: float = 512 / 1500,
        crop_n_points_downscale_factor: int = 1,
        point_grids: Sequence[np.ndarray] | None = None,
        min_mask_region_area: int = 0,
        output_mode: str = "binary_mask",
        max_mask_fraction: float | None = 0.95,
        mask_threshold: float = 0.0,
        tile_shape: tuple[int, int] | None = None,
        halo: tuple[int, int] = (256, 256),
        tiling_threshold: int = 2048,
        iou_floor: float = 0.5,
        stability_floor: float = 0.5,
        device: str | torch.device | None = None,
        precision: Precision = "fp32",
    ) -> None:
        if (points_per_side is None) == (point_grids is None):
            raise ValueError("give exactly one of points_per_side and point_grids")
        if point_grids is not None and len(point_grids) != crop_n_layers + 1:
            raise ValueError(
                f"point_grids needs one grid per crop layer ({crop_n_layers + 1}), "
                f"got {len(point_grids)}"
            )
        if output_mode not in OUTPUT_MODES:
            raise ValueError(f"output_mode must be one of {OUTPUT_MODES}, got {output_mode!r}")
        if points_per_batch < 1:
            raise ValueError(f"points_per_batch must be >= 1, got {points_per_batch}")
        if isinstance(model, Predictor):
            self.predictor = model
        else:
            self.predictor = Predictor(model, device=device, precision=precision)
        self.points_per_side = points_per_side
        self.points_per_batch = points_per_batch
        self.pred_iou_thresh = pred_iou_thresh
        self.stability_score_thresh = stability_score_thresh
        self.stability_score_offset = stability_score_offset
        self.box_nms_thresh = box_nms_thresh
        self.crop_n_layers = crop_n_layers
        self.crop_nms_thresh = crop_nms_thresh
        self.crop_overlap_ratio = crop_overlap_ratio
        self.crop_n_points_downscale_factor = crop_n_points_downscale_factor
        self.point_grids = None if point_grids is None else [np.asarray(g) for g in point_grids]
        self.min_mask_region_area = min_mask_region_area
        self.output_mode = output_mode
        self.max_mask_fraction = max_mask_fraction
        self.mask_threshold = mask_threshold
        self.tile_shape = tile_shape
        self.halo = halo
        self.tiling_threshold = tiling_threshold
        self.iou_floor = min(iou_floor, pred_iou_thresh)
        self.stability_floor = min(stability_floor, stability_score_thresh)

    # ------------------------------------------------------------------------------ public
    def generate(
        self,
        image: np.ndarray,
        embedding: ImageEmbedding | None = None,
        channels: int | Sequence[int] | None = None,
        normalization: Normalization = "auto",
        progress: Progress | None = None,
    ) -> list[dict]:
        """Records of the masks found in `image` (see `select` for their keys)."""
        candidates = self.compute_candidates(image, embedding, channels, normalization, progress)
        return self.select(candidates)

    def tile_layout(self, image_hw: tuple[int, int]) -> TileLayout | None:
        """How an image of (H, W) pixels is tiled (None: it is embedded whole)."""
        tile_shape = self.tile_shape
        if tile_shape is None:
            layout = layout_for(image_hw, DEFAULT_TILE_SHAPE, self.halo, self.tiling_threshold)
        elif image_hw[0] <= tile_shape[0] and image_hw[1] <= tile_shape[1]:
            layout = None
        else:
            layout = TileLayout.for_shape(image_hw, tile_shape, self.halo)
        if layout is not None and self.crop_n_layers:
            raise ValueError("crop layers and tiling don't combine: set crop_n_layers=0")
        return layout

    def regions_for(self, image_hw: tuple[int, int]) -> list[CropRegion]:
        """The crops or tiles this generator embeds for an image of (H, W) pixels."""
        n = self.points_per_side or 1
        layout = self.tile_layout(image_hw)
        if layout is not None:
            return tile_regions(layout, n)
        return crop_regions(
            image_hw,
            n,
            self.crop_n_layers,
            self.crop_overlap_ratio,
            self.crop_n_points_downscale_factor,
        )

    @torch.inference_mode()
    def compute_candidates(
        self,
        image: np.ndarray,
        embedding: ImageEmbedding | TiledEmbedding | None = None,
        channels: int | Sequence[int] | None = None,
        normalization: Normalization = "auto",
        progress: Progress | None = None,
    ) -> MaskCandidates:
        """The expensive pass: every candidate mask above the floors, for `select` to filter.

        image: (H, W), (H, W, 3) or (H, W, C) with `channels`, any dtype (as `Predictor`).
        embedding: already computed embeddings (e.g. from `EmbeddingCache`): the whole image's
            `ImageEmbedding` when it is not tiled (crops are still embedded here), or the
            `TiledEmbedding` with this generator's `tile_layout` when it is.
        progress(done, total): called after each embedding and each decoder batch; raise from
            it to abort.
        """
        image_hw = _image_hw(image)
        layout = self.tile_layout(image_hw)
        regions = self.regions_for(image_hw)
        embed = self._region_embedder(image, embedding, layout, regions, channels, normalization)
        collector = CandidateCollector(image_hw, regions, self.iou_floor, self.stability_floor)
        batches = [self._point_batches(r) for r in regions]
        total = sum(1 + len(b) for b in batches)
        done = 0
        upsamplers: dict[tuple, WindowedUpsampler] = {}
        for index, (region, region_batches) in enumerate(zip(regions, batches, strict=True)):
            self.predictor.set_embedding(embed(index))
            done += 1
            if progress is not None:
                progress(done, total)
            geometry = self.predictor.embedding.geometry
            key = (geometry.original_hw, geometry.input_hw)
            if key not in upsamplers:
                upsamplers[key] = WindowedUpsampler(geometry)
            for points_xy in region_batches:
                self._decode_batch(points_xy, region, index, upsamplers[key], collector, image_hw)
                done += 1
                if progress is not None:
                    progress(done, total)
        self.predictor.reset_image()
        return collector.finish()

    def select(
        self,
        candidates: MaskCandidates,
        pred_iou_thresh: float | None = None,
        stability_score_thresh: float | None = None,
        box_nms_thresh: float | None = None,
        crop_nms_thresh: float | None = None,
        min_mask_region_area: int | None = None,
        max_mask_fraction: float | str | None = "default",
        output_mode: str | None = None,
    ) -> list[dict]:
        """The cheap pass: thresholds, filters, NMS and postprocessing (no model).

        Arguments left out take the generator's settings. Returns records sorted by predicted
        IoU (highest first), each with: "segmentation" (per output_mode), "area" (pixels),
        "bbox" [x, y, w, h] pixels (COCO convention: w = last column - first column + 1),
        "predicted_iou", "stability_score", "point_coords" [[x, y]] pixels, "crop_box"
        [x, y, w, h] pixels of the region that produced the mask.
        """
        iou_t = self.pred_iou_thresh if pred_iou_thresh is None else pred_iou_thresh
        stab_t = (
            self.stability_score_thresh
            if stability_score_thresh is None
            else (stability_score_thresh)
        )
        nms_t = self.box_nms_thresh if box_nms_thresh is None else box_nms_thresh
        crop_nms_t = self.crop_nms_thresh if crop_nms_thresh is None else crop_nms_thresh
        min_area = (
            self.min_mask_region_area if min_mask_region_area is None else (min_mask_region_area)
        )
        max_frac = self.max_mask_fraction if max_mask_fraction == "default" else max_mask_fraction
        mode = self.output_mode if output_mode is None else output_mode
        if mode not in OUTPUT_MODES:
            raise ValueError(f"output_mode must be one of {OUTPUT_MODES}, got {mode!r}")
        if iou_t < candidates.iou_floor or stab_t < candidates.stability_floor:
            raise ValueError(
                f"thresholds below the floors the candidates were computed with "
                f"(pred_iou >= {candidates.iou_floor}, stability >= {candidates.stability_floor}); "
                "recompute with lower iou_floor / stability_floor"
            )
        c = candidates
        h, w = c.image_hw
        keep = (c.predicted_iou > iou_t) & (c.stability_score >= stab_t)
        if max_frac is not None:
            keep &= c.areas < max_frac * h * w
        idx = np.flatnonzero(keep)
        idx = self._nms_within_regions(c, idx, nms_t)
        if len(c.regions) > 1:
            layers = np.array([c.regions[r].layer for r in c.region_index[idx]], dtype=np.float64)
            scores = layers * 10.0 + c.predicted_iou[idx]  # most zoomed-in first, then IoU
            idx = idx[box_nms(c.boxes_xyxy[idx], scores, crop_nms_t)]
        masks = {int(i): c.mask(int(i)) for i in idx}  # unpacked for the survivors only
        boxes = {int(i): c.boxes_xyxy[i] for i in idx}
        if min_area > 0 and len(idx):
            idx, masks, boxes = self._postprocess(c, idx, masks, boxes, min_area, nms_t)
        idx = idx[np.argsort(-c.predicted_iou[idx], kind="stable")]
        return [self._record(c, int(i), masks[int(i)], boxes[int(i)], mode) for i in idx]

    # ----------------------------------------------------------------------------- helpers
    def _region_embedder(self, image, embedding, layout, regions, channels, normalization):
        """A function region index → that region's ImageEmbedding (given, or computed now)."""
        if layout is not None:
            if embedding is not None:
                if not isinstance(embedding, TiledEmbedding) or embedding.layout != layout:
                    raise EmbeddingError(
                        "this image is tiled "
                        f"({len(layout)} tiles of {layout.tile_shape}, halo {layout.halo}): "
                        "pass a TiledEmbedding with that same layout, or no embedding"
                    )
                return lambda i: embedding.embeddings[i]
            source = TileSource(image, channels, normalization)  # one tile converted at a time
            return lambda i: embed_tile(self.predictor, source, layout.tiles[i])
        rgb = as_rgb_uint8_or_float(image, channels, normalization)  # normalised once, globally
        if embedding is not None and len(regions) == 1:
            if not isinstance(embedding, ImageEmbedding):
                raise EmbeddingError("this image is not tiled: pass an ImageEmbedding")
            if tuple(embedding.original_hw) != tuple(rgb.shape[:2]):
                raise EmbeddingError(
                    f"embedding is of a {embedding.original_hw} image, not {rgb.shape[:2]}"
                )
            return lambda i: embedding

        def embed_crop(i: int) -> ImageEmbedding:
            x0, y0, x1, y1 = regions[i].box_xyxy
            crop = np.ascontiguousarray(rgb[y0:y1, x0:x1])
            return self.predictor.compute_embedding(crop, normalization="none")

        return embed_crop

    def _point_batches(self, region: CropRegion) -> list[np.ndarray]:
        """The region's grid points (image pixels, xy) in batches of points_per_batch."""
        if self.point_grids is not None:
            x0, y0, x1, y1 = region.points_box_xyxy
            unit = self.point_grids[region.layer]
            points = unit * np.array([x1 - x0, y1 - y0]) + np.array([x0, y0])
        else:
            points = region.grid_points_xy()
        step = self.points_per_batch
        return [points[i : i + step] for i in range(0, len(points), step)]

    def _decode_batch(
        self,
        points_xy: np.ndarray,
        region: CropRegion,
        region_index: int,
        upsampler: WindowedUpsampler,
        collector: CandidateCollector,
        image_hw: tuple[int, int],
    ) -> None:
        x0, y0 = region.box_xyxy[:2]
        local = points_xy - np.array([x0, y0])
        prompts = build_prompts(
            self.predictor.embedding.geometry, local[:, None, :], np.ones((len(local), 1))
        )
        low_res, iou = self.predictor.predict_low_res(prompts, multimask=True)
        low_res, iou = low_res.cpu().numpy(), iou.cpu().numpy()  # (B, 3, 256, 256), (B, 3)
        # The windows are small matmuls: one BLAS thread, or it fights torch's threads.
        with threadpool_limits(1, user_api="blas"):
            for b, k in zip(*np.nonzero(iou >= self.iou_floor), strict=True):
                self._add_candidate(
                    low_res[b, k],
                    float(iou[b, k]),
                    points_xy[b],
                    region,
                    region_index,
                    upsampler,
                    collector,
                    image_hw,
                )

    def _add_candidate(
        self, low_res, iou, point_xy, region, region_index, upsampler, collector, image_hw
    ) -> None:
        """Exact stability on the logit window; keeps the mask cut to its box if above floors."""
        thr, off = self.mask_threshold, self.stability_score_offset
        x0, y0 = region.box_xyxy[:2]
        window = upsampler.window(low_res, thr - off)
        if window is None:
            return
        union = np.count_nonzero(window.logits > thr - off)
        if union == 0:
            return
        stability = np.count_nonzero(window.logits > thr + off) / union
        if stability < self.stability_floor:
            return
        mask = window.logits > thr
        bounds = bounding_box(mask)
        if bounds is None:
            return
        c0, r0, c1, r1 = bounds
        local_mask = mask[r0:r1, c0:c1]
        box = (
            x0 + window.x0 + c0,
            y0 + window.y0 + r0,
            x0 + window.x0 + c1,
            y0 + window.y0 + r1,
        )
        if _near_region_edge(box, region.box_xyxy, image_hw):
            return  # cut off by an inner crop/tile border: never selected, so never stored
        collector.add(
            local_mask,
            box,
            int(np.count_nonzero(local_mask)),
            iou,
            float(stability),
            point_xy,
            region_index,
        )

    @staticmethod
    def _nms_within_regions(c: MaskCandidates, idx: np.ndarray, threshold: float) -> np.ndarray:
        kept = []
        for region in np.unique(c.region_index[idx]):
            members = idx[c.region_index[idx] == region]
            order = box_nms(c.boxes_xyxy[members], c.predicted_iou[members], threshold)
            kept.append(members[order])
        return np.concatenate(kept) if kept else idx

    @staticmethod
    def _postprocess(c, idx, masks, boxes, min_area, nms_threshold):
        """Small islands/holes removed per mask; then NMS preferring masks left unchanged."""
        survivors, changed = [], []
        for i in (int(v) for v in idx):
            new_mask, was_changed = remove_small_regions(masks[i], min_area)
            if not new_mask.any():
                continue
            if was_changed:
                c0, r0, c1, r1 = bounding_box(new_mask)
                x0, y0 = int(boxes[i][0]), int(boxes[i][1])
                masks[i] = new_mask[r0:r1, c0:c1]
                boxes[i] = np.array([x0 + c0, y0 + r0, x0 + c1, y0 + r1])
            survivors.append(i)
            changed.append(was_changed)
        if not survivors:
            return np.zeros(0, np.int64), masks, boxes
        ids = np.asarray(survivors, dtype=np.int64)
        scores = (~np.asarray(changed)).astype(np.float64) * 10.0 + c.predicted_iou[ids]
        keep = box_nms(np.stack([boxes[i] for i in ids]), scores, nms_threshold)
        return ids[keep], masks, boxes

    @staticmethod
    def _record(c: MaskCandidates, i: int, local: np.ndarray, box, mode: str) -> dict:
        x0, y0, x1, y1 = (int(v) for v in box)
        if mode == "cropped_mask":
            segmentation = local
        elif mode == "coco_rle":
            segmentation = encode_rle_cropped(local, (x0, y0, x1, y1), c.image_hw)
        else:
            segmentation = full_mask(local, (x0, y0, x1, y1), c.image_hw)
        rx0, ry0, rx1, ry1 = c.regions[int(c.region_index[i])].box_xyxy
        return {
            "segmentation": segmentation,
            "area": int(np.count_nonzero(local)),
            "bbox": [x0, y0, x1 - x0, y1 - y0],
            "predicted_iou": float(c.predicted_iou[i]),
            "stability_score": float(c.stability_score[i]),
            "point_coords": [[float(v) for v in c.points_xy[i]]],
            "crop_box": [rx0, ry0, rx1 - rx0, ry1 - ry0],
        }


def _image_hw(image: object) -> tuple[int, int]:
    shape = np.shape(image)
    if len(shape) < 2:
        raise ImageError(f"image must be (H, W) or (H, W, C), got shape {shape}")
    return int(shape[0]), int(shape[1])


def _near_region_edge(box, region_box, image_hw) -> bool:
    """Does the box touch an edge of its region that is not also an edge of the image?"""
    h, w = image_hw
    box = np.asarray(box, dtype=np.int64)
    region = np.asarray(region_box, dtype=np.int64)
    image = np.array([0, 0, w, h])
    near_region = np.abs(box - region) <= EDGE_TOLERANCE
    near_image = np.abs(box - image) <= EDGE_TOLERANCE
    return bool(np.any(near_region & ~near_image))
