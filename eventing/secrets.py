"""Kubernetes Secrets given beside the manifests, for the fields that name one.

Knative resources name credentials by ``{secretKeyRef: {name, key}}`` (a KafkaSource's
SASL user and password, its TLS certificates). knflow runs outside Kubernetes, so it
reads such a Secret from the manifest files, as ``kubectl apply`` would create it: a
``v1`` ``Secret`` in the referring resource's namespace, its base64 ``data`` and its
``stringData`` (which wins, as in Kubernetes). A reference to a Secret or key that is not
there is an error naming the field. Values are text (passwords, PEM certificates).
"""
from __future__ import annotations

import base64
import binascii
from typing import Any, Callable, Mapping

from eventing.errors import Problem
from eventing.manifests import Resource

__all__ = ["Secrets", "collect_secrets", "is_secret", "readable_values", "secret_value"]

#: ``(namespace, name) -> {key: value}``
Secrets = Mapping[tuple[str, str], Mapping[str, str]]


def is_secret(res: Resource) -> bool:
    return res.kind == "Secret" and res.api_version == "v1"


class _Unreadable(str):
    """A Secret's value knflow cannot use as text (binary, not base64), with the reason:
    reported only where a ``secretKeyRef`` names it, so a Secret of the same files that
    nothing refers to (a keystore, another app's credentials) is never a problem."""


def collect_secrets(resources: list[Resource], problems: list[Problem]) -> dict[tuple[str, str], dict[str, str]]:
    """Every ``v1`` Secret of ``resources`` by (namespace, name); a Secret defined twice is a
    problem. Values are decoded as Kubernetes decodes them (base64 ignoring line breaks,
    as Go's decoder does: a YAML block scalar or wrapped ``base64`` output is fine)."""
    secrets: dict[tuple[str, str], dict[str, str]] = {}
    first: dict[tuple[str, str], Resource] = {}
    for res in resources:
        if not is_secret(res):
            continue
        key = (res.namespace, res.name)
        if key in first:
            problems.append(res.problem("metadata.name", f"duplicate Secret {res.key!r} (first defined in {first[key].file})"))
            continue
        first[key] = res
        values: dict[str, str] = {}
        for field_name, decode in (("data", _from_base64), ("stringData", _as_text)):
            entries = res.body.get(field_name)
            if entries is None:
                continue
            if not isinstance(entries, Mapping):
                problems.append(res.problem(field_name, f"must be a mapping of keys to values, got {type(entries).__name__}"))
                continue
            for name, value in entries.items():
                values[str(name)] = decode(value)
        secrets[key] = values
    return secrets


def _from_base64(value: Any) -> str:
    if not isinstance(value, str):
        return _Unreadable(f"is not base64 text (got {type(value).__name__})")
    try:
        raw = base64.b64decode(value.replace("\r", "").replace("\n", ""), validate=True)
    except (binascii.Error, ValueError):
        return _Unreadable("is not valid base64")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return _Unreadable("is binary, not UTF-8 text")


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else _Unreadable(f"is not a string (got {type(value).__name__})")


def readable_values(secret: Mapping[str, str], keys: tuple[str, ...], where: str,
                    report: Callable[[str, str], None]) -> dict[str, str] | None:
    """The values of ``keys`` a Secret has (all of them text), or None after reporting one it
    has that knflow cannot read (``where`` names the Secret)."""
    out = {}
    for key in keys:
        value = secret.get(key)
        if isinstance(value, _Unreadable):
            report(f"{where}: {key}", f"{value}: knflow needs text here")
            return None
        if value is not None:
            out[key] = value
    return out


def secret_value(value: Any, field: str, namespace: str, secrets: Secrets,
                 report: Callable[[str, str], None]) -> str | None:
    """The text a ``{secretKeyRef: {name, key}}`` at ``field`` names, or None after reporting."""
    ref = value.get("secretKeyRef") if isinstance(value, Mapping) else None
    if not isinstance(ref, Mapping):
        report(field, "must be {secretKeyRef: {name, key}}")
        return None
    name, key = ref.get("name"), ref.get("key")
    for part, text in (("name", name), ("key", key)):
        if not isinstance(text, str) or not text:
            report(f"{field}.secretKeyRef.{part}", "is required")
            return None
    secret = secrets.get((namespace, name))
    if secret is None:
        report(f"{field}.secretKeyRef", f"Secret {namespace}/{name} is not in the manifests: knflow runs outside "
                                        f"Kubernetes and reads a Secret from the files given (a v1 Secret with "
                                        f"data or stringData), so give its YAML as one of them")
        return None
    if key not in secret:
        report(f"{field}.secretKeyRef.key", f"Secret {namespace}/{name} has no key {key!r} "
                                            f"(it has: {', '.join(sorted(secret)) or 'none'})")
        return None
    value = secret[key]
    if isinstance(value, _Unreadable):
        report(f"{field}.secretKeyRef.key", f"Secret {namespace}/{name} key {key!r} {value}: knflow needs text here")
        return None
    return value
