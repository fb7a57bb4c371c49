"""Exceptions raised by sam_core.

Every error a user can cause (bad image, bad prompt, bad checkpoint) is one of these, with a
message that names the problem and, where possible, how to fix it. They subclass the builtin
exception a caller would expect (ValueError, RuntimeError, ...) so generic handlers still work.
"""

from __future__ import annotations


class SamscopeError(Exception):
    """Base class of every error raised on purpose by sam_core."""


class UnknownModelError(SamscopeError, KeyError):
    """A model name that is not in the registry."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class CheckpointError(SamscopeError, ValueError):
    """A checkpoint that can't be used: wrong hash, truncated, not a state dict, wrong keys."""


class DownloadError(SamscopeError, RuntimeError):
    """Weights could not be fetched from any source (official URL or mirrors)."""


class ImageError(SamscopeError, ValueError):
    """An image that can't be segmented: empty, wrong rank, NaN/inf, unsupported dtype."""


class PromptError(SamscopeError, ValueError):
    """Prompts that don't fit the image: outside it, wrong shapes, inverted boxes."""


class EmbeddingError(SamscopeError, ValueError):
    """An image embedding that doesn't belong to this model or is damaged."""


class NotReadyError(SamscopeError, RuntimeError):
    """An operation that needs state the caller has not set yet (predict before set_image)."""


class OutputError(SamscopeError, OSError):
    """An output that can't be written: a read-only folder, two inputs with one output name."""


class ProvenanceError(SamscopeError, ValueError):
    """A provenance record or file that can't be used: another schema, a newer schema version,
    missing fields, a model that can't be found, a mask that can't be regenerated."""
