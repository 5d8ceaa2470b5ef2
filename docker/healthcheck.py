"""Healthcheck for the web container: GET the login page as the reverse proxy
would (an allowed Host and X-Forwarded-Proto: https, so neither
ALLOWED_HOSTS nor SECURE_SSL_REDIRECT turns it away). Exit 0 on HTTP 200.

Used by docker/compose.yaml; standard library only. The inference service
uses it too, with ARBITER_HEALTHCHECK_PORT=8001 and
ARBITER_HEALTHCHECK_PATH=/health.
"""

from __future__ import annotations

import http.client
import os
import sys


def _host() -> str:
    for entry in os.environ.get("DJANGO_ALLOWED_HOSTS", "localhost").split(","):
        entry = entry.strip()
        if entry and entry != "*":
            return entry.lstrip(".")  # ".example.com" also allows "example.com"
    return "localhost"


def main() -> int:
    port = int(os.environ.get("ARBITER_HEALTHCHECK_PORT", "8000"))
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(
            "GET",
            os.environ.get("ARBITER_HEALTHCHECK_PATH", "/accounts/login/"),
            headers={"Host": _host(), "X-Forwarded-Proto": "https"},
        )
        status = conn.getresponse().status
    except OSError as exc:
        sys.stderr.write(f"healthcheck: {exc}\n")
        return 1
    finally:
        conn.close()
    if status != 200:
        sys.stderr.write(f"healthcheck: HTTP {status}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
