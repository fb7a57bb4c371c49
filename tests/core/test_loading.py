"""`load_model`: registry names, user checkpoint files, and every way a checkpoint can be wrong."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from sam_core import CheckpointError, SamModel, UnknownModelError, build_sam, load_model
from sam_core.loading import infer_architecture


@pytest.fixture(scope="module")
def vit_t_state_dict(mobilesam_checkpoint) -> dict[str, torch.Tensor]:
    return torch.load(mobilesam_checkpoint, map_location="cpu", weights_only=True)


def _save(obj: object, path: Path) -> Path:
    torch.save(obj, path)
    return path


def _same_weights(model: SamModel, state_dict: dict[str, torch.Tensor]) -> bool:
    ours = model.state_dict()
    return ours.keys() == state_dict.keys() and all(
        torch.equal(ours[k], state_dict[k]) for k in state_dict
    )


def test_load_by_name(mobilesam_checkpoint, vit_t_state_dict) -> None:
    model = load_model("vit_t")
    assert isinstance(model, SamModel)
    assert model.name == "vit_t" and model.arch == "vit_t"
    assert not model.training
    assert model.device == torch.device("cpu")
    assert model.checkpoint_sha256.startswith("6dbb9052")
    assert _same_weights(model, vit_t_state_dict)
    assert load_model("VIT-T").name == "vit_t"  # case and dash are forgiven


@pytest.mark.parametrize(("name", "suggestion"), [("vit_tt", "vit_t"), ("vit-bb", "vit_b")])
def test_unknown_name_suggests_a_close_match(name: str, suggestion: str) -> None:
    with pytest.raises(UnknownModelError) as info:
        load_model(name)
    message = str(info.value)
    assert repr(name) in message
    assert f"Did you mean {suggestion!r}" in message
    assert "vit_t, vit_b, vit_l, vit_h" in message
    assert "existing checkpoint file" in message


def test_unknown_name_without_close_match() -> None:
    with pytest.raises(UnknownModelError, match="known models") as info:
        load_model("resnet50")
    assert "Did you mean" not in str(info.value)


def test_missing_path_is_reported_like_an_unknown_name(tmp_path) -> None:
    with pytest.raises(UnknownModelError, match="neither a known model name nor an existing"):
        load_model(tmp_path / "nope.pth")


def test_user_checkpoint_file(tmp_path, vit_t_state_dict) -> None:
    path = _save(vit_t_state_dict, tmp_path / "fine_tuned.pt")
    model = load_model(path)
    assert model.arch == "vit_t"
    assert model.name == str(path.resolve())
    assert model.checkpoint_sha256 is None
    assert _same_weights(model, vit_t_state_dict)
    assert load_model(str(path), arch="vit_t").arch == "vit_t"


@pytest.mark.parametrize("wrapper", ["model", "state_dict"])
def test_wrapped_training_checkpoint(tmp_path, vit_t_state_dict, wrapper: str) -> None:
    path = _save({wrapper: vit_t_state_dict, "epoch": 3}, tmp_path / "train.pt")
    model = load_model(path)
    assert model.arch == "vit_t"
    assert _same_weights(model, vit_t_state_dict)


def test_wrong_architecture_names_missing_and_unexpected_keys(tmp_path, vit_t_state_dict) -> None:
    path = _save(vit_t_state_dict, tmp_path / "mobile.pt")
    with pytest.raises(CheckpointError) as info:
        load_model(path, arch="vit_b")
    message = str(info.value)
    assert "vit_b" in message
    assert "missing keys" in message and "unexpected keys" in message
    assert "image_encoder.blocks.0.attn.qkv.weight" in message or "pos_embed" in message


def test_registry_name_with_another_arch(mobilesam_checkpoint) -> None:
    with pytest.raises(CheckpointError, match="vit_b"):
        load_model("vit_t", arch="vit_b")


def test_removed_key_is_named(tmp_path, vit_t_state_dict) -> None:
    removed = "mask_decoder.iou_prediction_head.layers.2.bias"
    state_dict = {k: v for k, v in vit_t_state_dict.items() if k != removed}
    path = _save(state_dict, tmp_path / "broken.pt")
    with pytest.raises(CheckpointError, match="1 missing keys") as info:
        load_model(path)
    assert removed in str(info.value)


def test_extra_key_and_wrong_shape_are_named(tmp_path, vit_t_state_dict) -> None:
    extra = dict(vit_t_state_dict, **{"head.weight": torch.zeros(2)})
    with pytest.raises(CheckpointError, match=r"unexpected keys \(head.weight\)"):
        load_model(_save(extra, tmp_path / "extra.pt"))
    key = "mask_decoder.iou_token.weight"
    reshaped = dict(vit_t_state_dict, **{key: torch.zeros(2, 256)})
    with pytest.raises(CheckpointError, match="other shapes") as info:
        load_model(_save(reshaped, tmp_path / "shape.pt"))
    assert key in str(info.value) and "(2, 256)" in str(info.value)


@pytest.mark.slow
def test_random_vit_b_checkpoint_infers_its_architecture(tmp_path) -> None:
    torch.manual_seed(0)
    state_dict = build_sam("vit_b").state_dict()
    path = _save(state_dict, tmp_path / "sam_vit_b_random.pth")
    model = load_model(path)
    assert model.arch == "vit_b"
    assert _same_weights(model, state_dict)


@pytest.mark.parametrize(("arch", "width"), [("vit_b", 768), ("vit_l", 1024), ("vit_h", 1280)])
def test_infer_architecture_from_shapes(arch: str, width: int) -> None:
    with torch.device("meta"):
        state_dict = build_sam(arch).state_dict()
    assert state_dict["image_encoder.patch_embed.proj.weight"].shape[0] == width
    assert infer_architecture(state_dict) == arch


def test_infer_architecture_of_a_foreign_state_dict() -> None:
    with pytest.raises(CheckpointError, match="arch="):
        infer_architecture({"backbone.conv1.weight": torch.zeros(1)})


def test_foreign_checkpoint_file(tmp_path) -> None:
    path = _save({"backbone.conv1.weight": torch.zeros(3)}, tmp_path / "resnet.pt")
    with pytest.raises(CheckpointError, match="architecture"):
        load_model(path)


def test_truncated_file(tmp_path, vit_t_state_dict) -> None:
    whole = _save(vit_t_state_dict, tmp_path / "whole.pt").read_bytes()
    path = tmp_path / "truncated.pt"
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt") as info:
        load_model(path)
    assert str(path) in str(info.value)


def test_empty_and_garbage_files(tmp_path) -> None:
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_model(empty)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a checkpoint" * 100)
    with pytest.raises(CheckpointError):
        load_model(garbage)


def test_pickled_list_is_refused(tmp_path) -> None:
    with pytest.raises(CheckpointError):
        load_model(_save([torch.zeros(2), torch.ones(3)], tmp_path / "list.pt"))
    raw = tmp_path / "raw_list.pkl"
    raw.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(CheckpointError):
        load_model(raw)


class _Evil:
    def __reduce__(self):
        return (print, ("code ran while loading",))


def test_pickled_code_is_refused(tmp_path, capsys) -> None:
    path = _save({"model": _Evil()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="refusing to load"):
        load_model(path)
    assert "code ran" not in capsys.readouterr().out


def test_directory_is_not_a_checkpoint(tmp_path) -> None:
    with pytest.raises((CheckpointError, UnknownModelError)):
        load_model(tmp_path)
