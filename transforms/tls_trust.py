"""A destination's own TLS trust: Knative's ``Destination.CACerts``.

Knative Eventing sends to an https destination trusting the system's root certificates
plus the destination's ``CACerts`` (PEM CA certificates: the usual case is a sink whose
certificate a cluster-internal CA such as cert-manager's signed). knflow does the same.

Trust is kept per *origin* (scheme, host, port), not per URL: a sender pools connections
per origin and TLS trust belongs to the connection, so two destinations on one origin
trust the union of their CAs. Senders take the result of :func:`trust_by_origin` as
``ca_certs`` and look a request's origin up in it (:func:`origin`) only when it is not
empty: destinations without ``CACerts`` pay nothing.
"""
from __future__ import annotations

import re
import ssl
from typing import Iterable, Mapping
from urllib.parse import urlsplit

__all__ = ["certificates", "check_pem", "origin", "ssl_context", "trust_by_origin"]

_DEFAULT_PORTS = {"https": 443, "http": 80}
_CERTIFICATE = re.compile(r"-----BEGIN CERTIFICATE-----\s.*?-----END CERTIFICATE-----", re.S)


def origin(url: str) -> str:
    """``scheme://host:port`` of ``url``, lower-case, with the scheme's default port."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    port = parts.port or _DEFAULT_PORTS.get(scheme, 0)
    return f"{scheme}://{host}:{port}"


def certificates(pem: str) -> list[str]:
    """The PEM certificates in ``pem``, each as its own text (Rust's TLS stack adds one
    certificate per call, while ``ssl`` takes a bundle)."""
    return _CERTIFICATE.findall(pem)


def check_pem(pem: object) -> str | None:
    """Why ``pem`` is not usable as ``CACerts``, or None when it is: a string of one or
    more PEM certificates that OpenSSL loads."""
    if not isinstance(pem, str) or not pem.strip():
        return "must be a string of PEM certificates (-----BEGIN CERTIFICATE----- ...)"
    if not certificates(pem):
        return "holds no PEM certificate (-----BEGIN CERTIFICATE----- ... -----END CERTIFICATE-----)"
    try:
        ssl_context(pem)
    except (ssl.SSLError, ValueError) as exc:
        return f"is not a valid PEM certificate: {exc}"
    return None


def ssl_context(pem: str) -> ssl.SSLContext:
    """A client context that verifies servers against the system's CAs and ``pem``'s."""
    context = ssl.create_default_context()
    context.load_verify_locations(cadata="\n".join(certificates(pem)))
    return context


def trust_by_origin(pairs: Iterable[tuple[str, str | None]]) -> Mapping[str, str]:
    """``{origin: PEM}`` from ``(url, CACerts)`` pairs of https destinations; the CAs of
    destinations that share an origin are joined (each certificate once)."""
    joined: dict[str, list[str]] = {}
    for url, pem in pairs:
        if not pem or urlsplit(url).scheme.lower() != "https":
            continue
        certs = joined.setdefault(origin(url), [])
        certs.extend(c for c in certificates(pem) if c not in certs)
    return {key: "\n".join(certs) + "\n" for key, certs in joined.items()}
