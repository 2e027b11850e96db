"""The client's view of a cluster YAML (the file the router and shards read): the router's address
and, when the file has a ``tls:`` section, an ``ssl.SSLContext`` that speaks to the cluster's
mutual TLS. PyYAML reads the file (``pip install moe-cluster[config]``); a JSON file (JSON is YAML)
needs nothing more."""

from __future__ import annotations

import json
import os
import ssl

from .errors import FailedPrecondition, InvalidArgument


def _load(config_path) -> dict:
    path = os.fspath(config_path)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise FailedPrecondition(f"{path}: cannot read: {e.strerror}") from None
    try:
        import yaml
    except ImportError:
        yaml = None
    try:
        doc = yaml.safe_load(text) if yaml is not None else json.loads(text)
    except Exception as e:  # noqa: BLE001 — the parser's own error, reported with the file
        hint = "" if yaml is not None else " (not JSON; install PyYAML to read YAML)"
        raise InvalidArgument(f"{path}: cannot parse{hint}: {e}") from None
    if not isinstance(doc, dict):
        raise InvalidArgument(f"{path}: expected a mapping at the top level")
    return doc


def router_address(config_path) -> str:
    """``router.listen`` of a cluster YAML: where clients reach the router."""
    path = os.fspath(config_path)
    listen = (_load(path).get("router") or {}).get("listen")
    if not isinstance(listen, str):
        raise InvalidArgument(f"{path}: router.listen: missing")
    return listen


def tls_context(config_path) -> ssl.SSLContext | None:
    """An ``ssl.SSLContext`` for the cluster of ``config_path``, from its ``tls:`` section (README
    "TLS"): it trusts only ``tls.ca``, presents ``tls.cert`` / ``tls.key`` as the client's
    certificate, and checks that the router's certificate names the host of its address (a DNS
    name or an IP SAN). Relative paths are resolved against the YAML file's directory, as the
    services do. ``None`` when the file has no ``tls:`` section (the cluster speaks plain TCP).

        tls = moe_cluster.tls_context("cluster.yaml")
        with moe_cluster.Client(moe_cluster.router_address("cluster.yaml"), tls=tls) as c: ...
    """
    path = os.fspath(config_path)
    section = _load(path).get("tls")
    if section is None:
        return None
    if not isinstance(section, dict):
        raise InvalidArgument(f"{path}: tls: expected a mapping with ca, cert and key")
    base = os.path.dirname(os.path.abspath(path))
    files = {}
    for key in ("ca", "cert", "key"):
        value = section.get(key)
        if not isinstance(value, str) or not value:
            raise InvalidArgument(f"{path}: tls.{key}: missing (tls needs ca, cert and key)")
        files[key] = os.path.join(base, value)  # an absolute value stays as it is
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=files["ca"])
    except (OSError, ssl.SSLError) as e:
        raise FailedPrecondition(f"{path}: tls.ca {files['ca']}: {e}") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(files["cert"], files["key"])
    except (OSError, ssl.SSLError) as e:
        raise FailedPrecondition(
            f"{path}: tls.cert {files['cert']} / tls.key {files['key']}: {e}") from None
    return context
