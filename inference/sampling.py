"""Traffic sampling in the inference process: after a sampled request was
answered, the other version answers the same prompt in a small background
executor and ``models_hub.services.serving.traffic_pair_record`` queues the
pair in the campaign. The API's own answers never wait for it."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor, wait

from django.db import DatabaseError, connections

from core.exceptions import ApplicationError
from inference.conf import setting
from inference.engine import served_model
from ml.serving import EngineError, SamplingParams, ServingEngine
from models_hub.services.serving import ServedVersion, traffic_pair_record

logger = logging.getLogger(__name__)

_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="traffic-sampling")
_pending: set[Future[None]] = set()
_lock = threading.Lock()


def sampling_has_room() -> bool:
    with _lock:
        return len(_pending) < setting("ARBITER_INFERENCE_SAMPLING_BACKLOG")


def sampling_submit(
    *,
    engine: ServingEngine,
    public_id: str,
    other: ServedVersion,
    prompt: str,
    params: SamplingParams,
) -> Future[None]:
    """Answer ``prompt`` with ``other`` and record the pair, in the background."""
    future = _executor.submit(_answer_other, engine, public_id, other, prompt, params)
    with _lock:
        _pending.add(future)
    future.add_done_callback(_forget)
    return future


def _forget(future: Future[None]) -> None:
    with _lock:
        _pending.discard(future)


def sampling_wait(timeout: float | None = None) -> None:
    """Block until every sampled request queued so far is recorded (tests)."""
    with _lock:
        pending = list(_pending)
    wait(pending, timeout=timeout)


def _answer_other(
    engine: ServingEngine,
    public_id: str,
    other: ServedVersion,
    prompt: str,
    params: SamplingParams,
) -> None:
    try:
        completed = engine.generate(served_model(other), prompt, params)
        traffic_pair_record(
            public_id=public_id,
            other=other,
            other_text=completed.text,
            other_finish_reason=completed.finish_reason,
            other_completion_tokens=completed.completion_tokens,
            decoding={
                "max_tokens": params.max_tokens,
                "temperature": params.temperature,
                "top_p": params.top_p,
                "stop": list(params.stop),
                "seed": params.seed,
            },
        )
    except (EngineError, ApplicationError, DatabaseError) as error:
        logger.warning(
            "inference.sampling.failed response=%s other=%s error=%s",
            public_id,
            other.name,
            error,
        )
    except Exception:  # noqa: BLE001 - thread edge: log, keep the executor alive
        logger.exception("inference.sampling.crashed response=%s", public_id)
    finally:
        connections.close_all()  # this thread's connections only
