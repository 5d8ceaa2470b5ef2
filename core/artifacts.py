"""The artifact store that this process's settings describe (``ml.artifacts``).

``ARBITER_STORAGE=local`` (the default) keeps artifacts as folders under
``ARBITER_STORAGE_ROOT``; ``ARBITER_STORAGE=s3`` keeps them in the bucket
``ARBITER_S3_BUCKET`` at ``ARBITER_S3_ENDPOINT_URL`` (credentials from the
environment, as boto3 reads them), with a local cache of at most
``ARBITER_ARTIFACT_CACHE_GB`` under ``ARBITER_ARTIFACT_CACHE_DIR``.

One store per configuration and process (a boto3 client is slow to build and
safe to share between threads). Settings are read on each call, never at
import time.
"""

from __future__ import annotations

import threading
from pathlib import Path

from django.conf import settings

from ml.artifacts import (
    ArtifactCache,
    ArtifactCorrupt,
    ArtifactError,
    ArtifactMissing,
    ArtifactStore,
    LocalStore,
    S3Store,
)

__all__ = [
    "ArtifactCorrupt",
    "ArtifactError",
    "ArtifactMissing",
    "ArtifactStore",
    "artifact_store",
]

_lock = threading.Lock()
_stores: dict[tuple[object, ...], ArtifactStore] = {}


def artifact_store() -> ArtifactStore:
    root = Path(settings.STORAGE_ROOT)
    if settings.ARBITER_STORAGE != "s3":
        return LocalStore(root)
    config = (
        str(root),
        settings.ARBITER_S3_BUCKET,
        settings.ARBITER_S3_ENDPOINT_URL,
        settings.ARBITER_S3_REGION,
        settings.ARBITER_S3_PREFIX,
        str(settings.ARBITER_ARTIFACT_CACHE_DIR),
        settings.ARBITER_ARTIFACT_CACHE_BYTES,
    )
    with _lock:
        store = _stores.get(config)
        if store is None:
            store = _stores[config] = S3Store(
                bucket=settings.ARBITER_S3_BUCKET,
                endpoint_url=settings.ARBITER_S3_ENDPOINT_URL,
                region=settings.ARBITER_S3_REGION,
                prefix=settings.ARBITER_S3_PREFIX,
                root=root,
                cache=ArtifactCache(
                    Path(settings.ARBITER_ARTIFACT_CACHE_DIR),
                    max_bytes=settings.ARBITER_ARTIFACT_CACHE_BYTES,
                ),
            )
    return store
