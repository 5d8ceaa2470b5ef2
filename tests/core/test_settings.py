"""config.settings: the Celery schedule's guarantees."""

from __future__ import annotations

from django.conf import settings


def test_periodic_gpu_tasks_expire_instead_of_piling_up() -> None:
    """A periodic task that waits behind training on the gpu queue expires
    before its next copy is sent, so at most one copy ever waits."""
    for name, entry in settings.CELERY_BEAT_SCHEDULE.items():
        route = settings.CELERY_TASK_ROUTES.get(entry["task"], {})
        if route.get("queue") == "gpu":
            expires = entry.get("options", {}).get("expires")
            assert expires is not None, name
            assert 0 < expires < entry["schedule"], name
