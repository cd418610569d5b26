"""Manifest errors: every problem names ``file: Kind/name: field: message``."""
from __future__ import annotations

from dataclasses import dataclass

from filters.errors import KnflowError


@dataclass(frozen=True)
class Problem:
    file: str
    kind: str
    name: str
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.kind}/{self.name}" if self.kind else ""
        parts = [p for p in (self.file, where, self.field) if p]
        return ": ".join(parts + [self.message])


class ManifestError(KnflowError, ValueError):
    """One or more manifests are invalid; ``problems`` lists every one of them."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        count = len(self.problems)
        head = f"{count} problem{'s' if count != 1 else ''} in the manifests"
        super().__init__(head + ":\n" + "\n".join(f"  {p}" for p in self.problems))
