"""Adapter downloads (PEFT folder as a zip) and merged full-model exports."""

from __future__ import annotations

import logging
import shutil
import tempfile
import uuid
import zipfile
from pathlib import Path
from typing import IO

from django.conf import settings

from core.artifacts import ArtifactError, artifact_store
from core.enqueue import enqueue
from core.exceptions import Conflict
from models_hub.models import Adapter
from models_hub.services.registry import adapter_path, base_model_local_path

logger = logging.getLogger(__name__)


def adapter_archive(*, adapter: Adapter) -> IO[bytes]:
    """A zip of the adapter's PEFT folder (loads with PeftModel.from_pretrained
    once unpacked). Spooled to disk past 32 MiB."""
    try:
        folder = adapter_path(adapter)
    except ArtifactError as error:
        raise Conflict(f"This adapter's files cannot be fetched: {error}") from error
    if not (folder / "adapter_config.json").exists():
        raise Conflict("This adapter's files are missing from the storage root.")
    spool = tempfile.SpooledTemporaryFile(max_size=32 * 1024 * 1024)  # noqa: SIM115 - returned open
    with zipfile.ZipFile(spool, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(
                    path, arcname=f"{adapter.name}/{path.relative_to(folder)}"
                )
    spool.seek(0)
    return spool


def adapter_merge_export_enqueue(*, adapter: Adapter) -> None:
    enqueue("models_hub.merge_export", adapter.pk)


def adapter_merge_export_run(*, adapter_id: int) -> str:
    """merge_and_unload() the adapter into its base and save a plain model
    for serving without adapter latency. Runs on a GPU worker."""
    from ml.merge import export_merged

    adapter = Adapter.objects.select_related("base_model").get(pk=adapter_id)
    store = artifact_store()
    if adapter.merged_path and store.has(adapter.merged_path):
        return adapter.merged_path
    relative = Path("exports") / f"adapter-{adapter.pk}-merged"
    tmp = Path(settings.STORAGE_ROOT) / "tmp" / f"merge-{adapter.pk}-{uuid.uuid4().hex}"
    try:
        export_merged(
            base_model_local_path(adapter.base_model), adapter_path(adapter), tmp
        )
        key = store.stage(tmp, name=str(relative))
        # A local folder left by an interrupted export is replaced; an object
        # never is (its name is its content).
        store.commit(tmp, key, replace=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    Adapter.objects.filter(pk=adapter.pk).update(merged_path=key)
    logger.info("models_hub.adapter.merged adapter=%s path=%s", adapter.pk, key)
    return key
