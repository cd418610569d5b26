"""CI cannot pass by skipping: ``.ci/run`` makes a missing conformance suite a failure."""
from __future__ import annotations

import pytest

from tests import conformance


def test_ci_run_requires_the_conformance_suites() -> None:
    script = (conformance.REPO / ".ci" / "run").read_text()
    assert "export KNFLOW_REQUIRE_CONFORMANCE=1" in script and "make test" in script


def test_a_missing_suite_fails_when_required_and_skips_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(conformance, "REQUIRED", True)
    with pytest.raises(pytest.fail.Exception, match="conformance data not found .*no-such-suite"):
        conformance.conformance_path("no-such-suite")
    monkeypatch.setattr(conformance, "REQUIRED", False)
    with pytest.raises(pytest.skip.Exception, match="conformance data not found"):
        conformance.conformance_path("no-such-suite")
