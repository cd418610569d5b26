"""Where the external conformance suites live: ``../shared/conformance`` from the repo root.

Tests that read them skip with a clear message when the folder is absent.
"""
from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONFORMANCE = (REPO.parent / "shared" / "conformance").resolve()


def conformance_path(*parts: str) -> Path:
    path = CONFORMANCE.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"conformance data not found at {path} (expected ../shared/conformance beside the repo)")
    return path
