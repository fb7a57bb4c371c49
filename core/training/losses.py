"""The paper's training losses (appendix A, "Losses").

Mask loss: 20 x focal loss + 1 x dice loss per predicted mask. With several output masks
(the ambiguity-aware multimask output), only the mask with the lowest loss is supervised
("min over the 3"). IoU head: mean squared error between the predicted IoU and the actual IoU
with the target, for every output mask (not only the supervised one: the head's job is to
rank the 3 masks, so the worse ones need their real IoU too), added with weight 1.

Optional ranking term (not in the paper; `rank_weight` > 0): cross-entropy between the
softmax of the predicted IoUs (temperature `RANK_TEMPERATURE`) and the index of the mask with
the highest actual IoU. The single-point protocol keeps the mask with the highest predicted
IoU, so after fine-tuning on small objects the *order* of the three scores matters more than
their values: the MSE alone left the most confident mask 4 points of mIoU below the best one.
The trainer gives it scores from the IoU head applied to a detached IoU token (`rank_scores`),
so it trains the head alone: back-propagated into the decoder, it hurt the masks (1-point
mIoU 0.78 after 2 epochs instead of 0.80).

Shapes: logits (B, M, h, w) low-resolution mask logits (M = 3 or 1); targets (B, h, w) in
[0, 1] (soft targets allowed: the fraction of each low-res cell inside the object);
iou_pred (B, M). Losses are averaged over the B objects.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

FOCAL_WEIGHT = 20.0
DICE_WEIGHT = 1.0
IOU_WEIGHT = 1.0
RANK_TEMPERATURE = 0.05
FOCAL_ALPHA = 0.25
FOCAL_GAMMA = 2.0


def focal_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Sigmoid focal loss (Lin et al.), mean over pixels: (B, M, h, w), (B, 1, h, w) → (B, M)."""
    prob = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets.expand_as(logits), reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    alpha_t = FOCAL_ALPHA * targets + (1 - FOCAL_ALPHA) * (1 - targets)
    return (alpha_t * (1 - p_t) ** FOCAL_GAMMA * ce).flatten(2).mean(-1)


def dice_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """1 - soft Dice coefficient (smoothed by 1): (B, M, h, w), (B, 1, h, w) → (B, M)."""
    prob = torch.sigmoid(logits).flatten(2)
    target = targets.expand_as(logits).flatten(2)
    numerator = 2 * (prob * target).sum(-1)
    denominator = prob.sum(-1) + target.sum(-1)
    return 1 - (numerator + 1) / (denominator + 1)


def mask_iou(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """IoU of thresholded masks (logit > 0) with targets (≥ 0.5): → (B, M), no gradient."""
    with torch.no_grad():
        pred = (logits > 0).flatten(2)
        gt = (targets >= 0.5).expand_as(logits).flatten(2)
        inter = (pred & gt).sum(-1).float()
        union = (pred | gt).sum(-1).float()
        return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def sam_loss(
    logits: torch.Tensor,
    iou_pred: torch.Tensor,
    targets: torch.Tensor,
    rank_weight: float = 0.0,
    rank_scores: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss for one decoder output and its parts (floats, for logging).

    logits (B, M, h, w), iou_pred (B, M), targets (B, h, w) → scalar loss. rank_weight: weight
    of the ranking term (used only when M > 1), computed on `rank_scores` (B, M) if given,
    else on `iou_pred`.
    """
    targets = targets[:, None].to(logits.dtype)
    focal = focal_loss(logits, targets)
    dice = dice_loss(logits, targets)
    per_mask = FOCAL_WEIGHT * focal + DICE_WEIGHT * dice  # (B, M)
    best = per_mask.argmin(dim=1)  # the supervised mask of each object
    rows = torch.arange(logits.shape[0], device=logits.device)
    actual_iou = mask_iou(logits, targets)  # (B, M)
    iou_loss = F.mse_loss(iou_pred.float(), actual_iou)
    mask_loss = per_mask[rows, best].mean()
    total = mask_loss + IOU_WEIGHT * iou_loss
    if rank_weight > 0 and logits.shape[1] > 1:
        scores = iou_pred if rank_scores is None else rank_scores
        rank_loss = F.cross_entropy(scores.float() / RANK_TEMPERATURE, actual_iou.argmax(dim=1))
        total = total + rank_weight * rank_loss
    parts = {
        "focal": float(focal.detach()[rows, best].mean()),
        "dice": float(dice.detach()[rows, best].mean()),
        "iou_mse": float(iou_loss.detach()),
        "iou": float(actual_iou[rows, best].mean()),
    }
    return total, parts
