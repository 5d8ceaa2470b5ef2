"""The process-wide serving engine: one loaded base (the default base model
version, resolved as the gpu workers resolve it) serving its adapters and
merged exports to every request thread.

Created on first use (loading the base takes seconds; the built-in SmolLM2
is converted from its GGUF once). If the default base changes, the next
request loads the new one and the old engine is closed.
"""

from __future__ import annotations

import logging
import threading

from core.artifacts import ArtifactError
from inference.conf import setting
from ml.serving import EngineError, ServedModel, ServingEngine
from models_hub.models import BaseModelVersion
from models_hub.services.registry import base_model_local_path
from models_hub.services.serving import ServedVersion

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_engine: ServingEngine | None = None
_engine_path: str | None = None


def engine_for(base: BaseModelVersion) -> ServingEngine:
    """The engine serving ``base`` (created, or replaced, under a lock)."""
    global _engine, _engine_path
    try:
        path = base_model_local_path(base)  # converts the built-in model once
    except (OSError, ValueError, RuntimeError, ImportError) as error:
        raise EngineError(f"the base model {base} is not available: {error}") from error
    with _lock:
        if _engine is not None and _engine_path == path:
            return _engine
        old = _engine
        logger.info("inference.engine.loading base=%s path=%s", base.pk, path)
        try:
            _engine = ServingEngine(
                path,
                max_adapters=setting("ARBITER_INFERENCE_MAX_ADAPTERS"),
                max_merged=setting("ARBITER_INFERENCE_MAX_MERGED"),
                max_batch=setting("ARBITER_INFERENCE_MAX_BATCH"),
                batch_wait_ms=setting("ARBITER_INFERENCE_BATCH_WAIT_MS"),
            )
        except (OSError, ValueError, RuntimeError) as error:
            raise EngineError(
                f"the base model {base} cannot be loaded from {path}: {error}"
            ) from error
        _engine_path = path
    if old is not None:
        old.close()
    return _engine


def engine_loaded() -> ServingEngine | None:
    """The engine if one is loaded (counters for tests and metrics)."""
    return _engine


def engine_close() -> None:
    global _engine, _engine_path
    with _lock:
        engine, _engine, _engine_path = _engine, None, None
    if engine is not None:
        engine.close()


def served_model(version: ServedVersion) -> ServedModel:
    """What the engine runs for a served version (its immutable name). With
    object storage its files are fetched into this server's cache first."""
    try:
        adapter_path, merged_path = version.adapter_path, version.merged_path
    except ArtifactError as error:
        raise EngineError(
            f"the files of {version.name} cannot be fetched: {error}"
        ) from error
    return ServedModel(
        name=version.name, adapter_path=adapter_path, merged_path=merged_path
    )
