"""Shared pytest helpers: where the public test vectors live."""

from __future__ import annotations

from pathlib import Path

import pytest

VECTORS: Path = (Path(__file__).resolve().parents[1] / ".." / "shared" / "vectors").resolve()
"""The shared test vectors, ``../shared/vectors`` beside the repository (see its README.md)."""


@pytest.fixture
def vectors() -> Path:
    """Return the folder of shared test vectors."""
    return VECTORS
