"""The one error hierarchy of knflow.

It lives in the lowest layer (``filters`` imports nothing of ours) so that every other
package can raise and catch the same base class. Leaf errors also subclass
``ValueError`` or ``TypeError`` so callers that only know the builtins still work.
"""
from __future__ import annotations


class KnflowError(Exception):
    """Base class of every error knflow raises on purpose."""


class FilterSpecError(KnflowError, ValueError):
    """A trigger filter spec is invalid; ``path`` names the field at fault.

    ``path`` is relative to the Trigger, e.g. ``spec.filters[0].any[1].exact``. The
    resource model prefixes it with the file, kind and name.
    """

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}" if path else message)


class FilterEvaluationError(KnflowError, ValueError):
    """A filter could not be evaluated on one event (counted, and the filter FAILs)."""
