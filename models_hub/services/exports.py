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

from core.exceptions import Conflict
from models_hub.models import Adapter
from models_hub.services.registry import adapter_path, base_model_local_path

logger = logging.getLogger(__name__)


def adapter_archive(*, adapter: Adapter) -> IO[bytes]:
    """A zip of the adapter's PEFT folder (loads with PeftModel.from_pretrained
    once unpacked). Spooled to disk past 32 MiB."""
    folder = adapter_path(adapter)
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
    from models_hub.tasks import merge_export as merge_export_task

    merge_export_task.delay_on_commit(adapter.pk)


def adapter_merge_export_run(*, adapter_id: int) -> str:
    """merge_and_unload() the adapter into its base and save a plain model
    for serving without adapter latency. Runs on a GPU worker."""
    from peft import PeftModel
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
    )

    adapter = Adapter.objects.select_related("base_model").get(pk=adapter_id)
    if (
        adapter.merged_path
        and (Path(settings.STORAGE_ROOT) / adapter.merged_path).exists()
    ):
        return adapter.merged_path
    base_path = base_model_local_path(adapter.base_model)
    tokenizer = AutoTokenizer.from_pretrained(base_path)
    if adapter.role == Adapter.Role.REWARD:
        base = AutoModelForSequenceClassification.from_pretrained(
            base_path, num_labels=1
        )
        base.config.pad_token_id = tokenizer.pad_token_id or tokenizer.eos_token_id
    else:
        base = AutoModelForCausalLM.from_pretrained(base_path)
    merged = PeftModel.from_pretrained(
        base, str(adapter_path(adapter))
    ).merge_and_unload()
    relative = Path("exports") / f"adapter-{adapter.pk}-merged"
    final = Path(settings.STORAGE_ROOT) / relative
    tmp = Path(settings.STORAGE_ROOT) / "tmp" / f"merge-{adapter.pk}-{uuid.uuid4().hex}"
    try:
        merged.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    Adapter.objects.filter(pk=adapter.pk).update(merged_path=str(relative))
    logger.info("models_hub.adapter.merged adapter=%s path=%s", adapter.pk, relative)
    return str(relative)
