"""The CA certificates an HTTPS client trusts by default, chosen as httpx chooses them for `verify=True` with
`trust_env` (SSL_CERT_FILE, else SSL_CERT_DIR, else certifi's bundle), but made explicitly: the clients that talk
to PMTA's API and to Prometheus set `trust_env=False` so that an HTTP_PROXY meant for other programs is not their
way there, and with it httpx stops reading those two variables (a private CA named by SSL_CERT_FILE was refused)."""

from __future__ import annotations

import os
import ssl


def default_trust() -> ssl.SSLContext:
    """A verifying client context: SSL_CERT_FILE's certificates, else SSL_CERT_DIR's, else certifi's bundle."""
    cafile, capath = os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR")
    if cafile:
        return ssl.create_default_context(cafile=cafile)
    if capath:
        return ssl.create_default_context(capath=capath)
    import certifi

    return ssl.create_default_context(cafile=certifi.where())
