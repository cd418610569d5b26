"""Where the external conformance suites live: ``../shared/conformance`` from the repo root.

Tests that read them skip with a clear message when the folder is absent, unless
``KNFLOW_REQUIRE_CONFORMANCE=1`` (set by ``.ci/run``): then a missing suite fails the run,
so CI can never pass by skipping them.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONFORMANCE = (REPO.parent / "shared" / "conformance").resolve()
REQUIRED = os.environ.get("KNFLOW_REQUIRE_CONFORMANCE", "") not in ("", "0")


def conformance_path(*parts: str) -> Path:
    path = CONFORMANCE.joinpath(*parts)
    if not path.exists():
        message = f"conformance data not found at {path} (expected ../shared/conformance beside the repo)"
        if REQUIRED:
            pytest.fail(f"{message}; KNFLOW_REQUIRE_CONFORMANCE is set", pytrace=False)
        pytest.skip(message)
    return path
