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

__all__ = ["Secrets", "collect_secrets", "is_secret", "secret_value"]

#: ``(namespace, name) -> {key: value}``
Secrets = Mapping[tuple[str, str], Mapping[str, str]]


def is_secret(res: Resource) -> bool:
    return res.kind == "Secret" and res.api_version == "v1"


def collect_secrets(resources: list[Resource], problems: list[Problem]) -> dict[tuple[str, str], dict[str, str]]:
    """Every ``v1`` Secret of ``resources`` by (namespace, name); bad entries are problems."""
    secrets: dict[tuple[str, str], dict[str, str]] = {}
    for res in resources:
        if not is_secret(res):
            continue
        values: dict[str, str] = {}
        for field_name, decode in (("data", _from_base64), ("stringData", _as_text)):
            entries = res.body.get(field_name)
            if entries is None:
                continue
            if not isinstance(entries, Mapping):
                problems.append(res.problem(field_name, f"must be a mapping of keys to values, got {type(entries).__name__}"))
                continue
            for key, value in entries.items():
                text = decode(value)
                if text is None:
                    what = "base64 of UTF-8 text" if field_name == "data" else "a string"
                    problems.append(res.problem(f"{field_name}.{key}", f"must be {what}"))
                else:
                    values[str(key)] = text
        secrets[(res.namespace, res.name)] = values
    return secrets


def _from_base64(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    try:
        return base64.b64decode(value, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None


def _as_text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


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
    return secret[key]
