"""WSGI entry of the inference process. Run it as one process with many
threads so that one serving engine (one loaded base) answers every request:

    gunicorn inference.wsgi --workers 1 --worker-class gthread --threads 16

With ``ARBITER_INFERENCE_PRELOAD`` the default base loads in the background
as the process starts; a request that comes first waits for that load
instead of starting its own.
"""

from __future__ import annotations

import logging
import os
import threading

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "inference.settings")

application = get_wsgi_application()


def _preload() -> None:
    from inference.engine import engine_for
    from inference.replica import activity
    from models_hub.services.registry import base_model_default

    try:
        base = base_model_default()
        activity.note_base(engine_for(base), f"base-{base.pk}")
    except Exception:  # noqa: BLE001 - the first request reports it
        logging.getLogger(__name__).exception("inference.engine.preload_failed")


def _start_preload() -> None:
    from inference.conf import setting

    if setting("ARBITER_INFERENCE_PRELOAD"):
        threading.Thread(target=_preload, name="engine-preload", daemon=True).start()


_start_preload()
