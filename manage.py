#!/usr/bin/env python
"""Django's command-line utility. Without DATABASE_URL / CELERY_BROKER_URL it
starts (or attaches to) the embedded PostgreSQL and Redis under .data/."""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    explicit_production = os.environ.get("DJANGO_DEBUG", "").lower() in (
        "0",
        "false",
        "no",
        "off",
    )
    missing = not os.environ.get("DATABASE_URL") or not os.environ.get(
        "CELERY_BROKER_URL"
    )
    # A configured production server never silently falls back to embedded
    # services: settings then fail loudly on the missing variable instead.
    if missing and not explicit_production:
        from core.embedded import ensure_services

        os.environ.setdefault("DJANGO_DEBUG", "true")
        ensure_services()
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
