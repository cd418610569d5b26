"""Parse Knative ``Destination`` objects (``uri`` and/or ``ref``, ``CACerts``) with clear errors."""
from __future__ import annotations

from typing import Any, Mapping
from urllib.parse import urlsplit

from eventing.plan import Destination, Ref
from transforms.tls_trust import check_pem


class DestinationError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(message)


def parse_destination(value: Any, field: str, namespace: str) -> Destination:
    """A Destination at ``field``; ``ref`` without namespace takes the resource's."""
    if not isinstance(value, Mapping):
        raise DestinationError(field, f"must be a mapping with uri and/or ref, got {type(value).__name__}")
    unknown = sorted(set(value) - {"uri", "ref", "CACerts", "audience"})
    if unknown:
        raise DestinationError(f"{field}.{unknown[0]}", "unknown field (expected uri or ref)")
    ca_certs = value.get("CACerts")
    if ca_certs is not None:
        problem = check_pem(ca_certs)
        if problem:
            raise DestinationError(f"{field}.CACerts", problem)
    uri, ref_spec = value.get("uri"), value.get("ref")
    if uri is None and ref_spec is None:
        raise DestinationError(field, "needs a uri or a ref")
    ref = None
    if ref_spec is not None:
        ref = _parse_ref(ref_spec, f"{field}.ref", namespace)
    if uri is not None:
        if not isinstance(uri, str) or not uri:
            raise DestinationError(f"{field}.uri", "must be a non-empty string")
        if ref is None:
            parts = urlsplit(uri)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise DestinationError(f"{field}.uri", f"must be an absolute http(s) URI, got {uri!r}")
            try:
                parts.port
            except ValueError as exc:
                raise DestinationError(f"{field}.uri", f"has an invalid port ({exc}): {uri!r}") from None
        elif urlsplit(uri).scheme:
            raise DestinationError(f"{field}.uri", f"with a ref, uri must be a relative path, got {uri!r}")
    return Destination(uri=uri, ref=ref, ca_certs=ca_certs)


def _parse_ref(value: Any, field: str, namespace: str) -> Ref:
    if not isinstance(value, Mapping):
        raise DestinationError(field, f"must be a mapping with kind and name, got {type(value).__name__}")
    for key in ("kind", "name"):
        if not isinstance(value.get(key), str) or not value.get(key):
            raise DestinationError(f"{field}.{key}", "is required")
    ns = value.get("namespace", namespace)
    if not isinstance(ns, str) or not ns:
        raise DestinationError(f"{field}.namespace", "must be a non-empty string")
    return Ref(kind=value["kind"], name=value["name"], namespace=ns, api_version=str(value.get("apiVersion", "")))
