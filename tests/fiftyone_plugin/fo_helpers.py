"""Helpers for the FiftyOne plugin tests: the test dataset from real images and running an
operator delegated. Import only after conftest.py has set the FiftyOne environment."""

from __future__ import annotations

from pathlib import Path

import numpy as np

PLUGIN = "@samscope/sam"
DATASET = "samscope-test-fo"

# Small real images: three 256² fluorescence nuclei images and two COCO images.
NUCLEI = ("0b2e702f90aee4ff", "6fb82031f7fc5f4f", "4829177d0b36abdd")
COCO = ("000000409630", "000000182202")


def _instance_masks(label_image: np.ndarray) -> list[np.ndarray]:
    return [label_image == i for i in np.unique(label_image) if i != 0]


def _interior_point(mask: np.ndarray) -> tuple[float, float]:
    """(x, y) of the pixel farthest from the mask's border."""
    from scipy.ndimage import distance_transform_edt

    distance = distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    y, x = np.unravel_index(np.argmax(distance), distance.shape)
    return float(x) + 0.5, float(y) + 0.5


def build_dataset(nuclei_root: Path, coco_root: Path | None, name: str = DATASET):
    """Persistent dataset: ground truth `ground_truth` (Detections with masks), box prompts
    `boxes` (the GT boxes, each with `gt_id`) and click prompts `clicks` (one interior point
    per object, as Keypoints with `gt_id`). The NUCLEI images (tag "nuclei") come from the
    dsb2018_fluo_dev folder `nuclei_root`; the COCO images (tag "coco") from the
    coco_val2017_multi folder `coco_root`, left out when it is None (no shared/ folder)."""
    import fiftyone as fo
    import tifffile

    from samscope_fiftyone.conversion import mask_to_detection

    samples = []
    items = [(nuclei_root, n, "nucleus", "nuclei") for n in NUCLEI]
    items += [(coco_root, n, None, "coco") for n in COCO if coco_root is not None]
    for root, stem, label, group in items:
        if group == "nuclei":
            path = root / "images" / f"{stem}.png"
            masks = _instance_masks(tifffile.imread(root / "labels" / f"{stem}.tif"))
            names = [label] * len(masks)
        else:
            path = root / "images" / f"{stem}.jpg"
            npz = np.load(root / "instances" / f"{stem}.npz")
            keep = npz["iscrowd"] == 0
            masks, names = list(npz["masks"][keep]), [str(c) for c in npz["category"][keep]]
        height, width = masks[0].shape
        gts = [mask_to_detection(m, n) for m, n in zip(masks, names, strict=True)]
        gts = [g for g in gts if g is not None]
        boxes, clicks = [], []
        for mask, gt in zip(masks, gts, strict=True):
            boxes.append(fo.Detection(label=gt.label, bounding_box=gt.bounding_box, gt_id=gt.id))
            x, y = _interior_point(mask)
            clicks.append(
                fo.Keypoint(label=gt.label, points=[[x / width, y / height]], gt_id=gt.id)
            )
        samples.append(
            fo.Sample(
                filepath=str(path),
                tags=[group],
                ground_truth=fo.Detections(detections=gts),
                boxes=fo.Detections(detections=boxes),
                clicks=fo.Keypoints(keypoints=clicks),
            )
        )
    dataset = fo.Dataset(name, overwrite=True, persistent=True)
    dataset.add_samples(samples)
    dataset.compute_metadata()
    return dataset


def run_delegated(uri: str, dataset, params: dict, view=None):
    """Queue `uri` as a delegated operation and run the queue in this process (what
    `fiftyone delegated launch` does); returns the finished operation document."""
    import fiftyone.operators as foo
    from fiftyone.operators.delegated import DelegatedOperationService

    kwargs = {} if view is None else {"view": view}
    result = foo.execute_operator(
        uri,
        dataset=dataset,
        params={**params, "delegate": True},
        request_delegation=True,
        **kwargs,
    )
    assert result.delegated, result.error
    service = DelegatedOperationService()
    queued = service.get_queued_operations(operator=uri, dataset_name=dataset.name)
    assert queued, "nothing was queued"
    service.execute_queued_operations(operator=uri, dataset_name=dataset.name)
    doc = service.get(queued[-1].id)
    service.delete_operation(doc.id)
    return doc


def recall_at(dataset, field: str, tag: str, iou: float = 0.5) -> tuple[float, int]:
    """Fraction of GT objects of the samples tagged `tag` that some mask in `field` covers
    with IoU >= `iou`, and the number of GT objects."""
    from samscope_fiftyone.conversion import detection_to_mask

    found, total = 0, 0
    for sample in dataset.match_tags(tag):
        hw = (sample.metadata.height, sample.metadata.width)
        preds = [detection_to_mask(d, hw) for d in sample[field].detections]
        for gt in sample.ground_truth.detections:
            true = detection_to_mask(gt, hw)
            total += 1
            best = max(((p & true).sum() / (p | true).sum() for p in preds), default=0.0)
            found += best >= iou
    return found / max(total, 1), total
