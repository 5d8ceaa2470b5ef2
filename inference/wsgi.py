"""WSGI entry of the inference process. Run it as one process with many
threads so that one serving engine (one loaded base) answers every request:

    gunicorn inference.wsgi --workers 1 --worker-class gthread --threads 16
"""

from __future__ import annotations

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "inference.settings")

application = get_wsgi_application()
