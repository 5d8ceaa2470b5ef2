"""The OpenAI-compatible endpoints: ``GET /v1/models``, ``POST
/v1/chat/completions``, ``POST /v1/completions``.

Each request: method (405), API token (401), the token's rate limit (429),
the body (400 naming the field), the model name (404), then the engine
answers (streamed as server-sent events, or whole). Every answer is recorded
as a ``ServedResponse`` with the version that gave it; an engine failure is
a 503 (or a 400 for a prompt the model cannot take), never a 500.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import DatabaseError
from django.http import (
    HttpRequest,
    HttpResponse,
    JsonResponse,
    StreamingHttpResponse,
)
from django.views.decorators.csrf import csrf_exempt
from jinja2 import TemplateError

from core.artifacts import ArtifactError
from core.exceptions import NotFound
from core.unavailable import RETRY_AFTER_SECONDS, database_unavailable
from inference.access import caller_for
from inference.conf import setting
from inference.engine import engine_for, engine_loaded, served_model
from inference.errors import (
    InferenceError,
    artifacts_unavailable,
    error_body,
    error_response,
)
from inference.parsing import (
    CHAT,
    CompletionRequest,
    context_check,
    parse_chat,
    parse_completion,
    parse_json,
)
from inference.replica import (
    REPLICA_HEADER,
    ROUTER_HEADER,
    SEED_HEADER,
    activity,
    replica_id,
    route_rng,
    secret_matches,
)
from inference.sampling import sampling_has_room, sampling_submit
from ml.serving import Completed, EngineError, SamplingParams, TokenStream
from models_hub.models import ServedResponse
from models_hub.services.serving import (
    Route,
    served_model_list,
    served_response_record,
    serving_route,
)

logger = logging.getLogger(__name__)

View = Callable[..., HttpResponse]


# ---------------------------------------------------------------- the edge


def _api(*methods: str) -> Callable[[View], View]:
    """Method check, and every failure as an OpenAI-style error body."""

    def decorate(view: View) -> View:
        @csrf_exempt
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            try:
                if request.method not in methods:
                    raise InferenceError(
                        f"{request.method} is not allowed here; use "
                        f"{' or '.join(methods)}.",
                        status=405,
                        code="method_not_allowed",
                        headers={"Allow": ", ".join(methods)},
                    )
                return _replica_named(view(request, *args, **kwargs))
            except InferenceError as error:
                return _replica_named(error_response(error))
            except DatabaseError as error:
                if not database_unavailable(error):
                    return _internal_error(request)
                logger.warning("inference.database_unavailable error=%s", error)
                return _replica_named(
                    error_response(
                        InferenceError(
                            "The database is restarting or unreachable; try again "
                            "in a few seconds.",
                            status=503,
                            type="server_error",
                            code="service_unavailable",
                            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
                        )
                    )
                )
            except Exception:  # noqa: BLE001 - process edge: a bug, logged, in OpenAI's shape
                return _internal_error(request)

        wrapped.__name__ = view.__name__
        wrapped.__doc__ = view.__doc__
        return wrapped

    return decorate


def _replica_named(response: HttpResponse) -> HttpResponse:
    """Every answer names the process that gave it (``X-Arbiter-Replica``)."""
    response[REPLICA_HEADER] = replica_id()
    return response


def _internal_error(request: HttpRequest) -> HttpResponse:
    logger.exception("inference.request.crashed path=%s", request.path)
    return _replica_named(
        error_response(
            InferenceError(
                "The inference service failed on this request; it was logged.",
                status=500,
                type="server_error",
                code="internal_error",
            )
        )
    )


def _caller(request: HttpRequest) -> AbstractBaseUser:
    """The token's user (``Authorization: Bearer <token>``, the same API
    tokens as the web API), after the token's rate limit (counted by the
    router instead when the router forwarded the request)."""
    return caller_for(
        request.headers.get("Authorization", ""), count=not _forwarded(request)
    )


def _forwarded(request: HttpRequest) -> bool:
    """Whether the router in front of this replica sent the request."""
    return secret_matches(request.headers.get(ROUTER_HEADER, ""))


def _route(model: str, user: str, request: HttpRequest | None = None) -> Route:
    # The router's seed: the same alias, user and draws route to the version
    # the router picked this replica for.
    seed = request.headers.get(SEED_HEADER, "") if request is not None else ""
    rng = route_rng(seed) if seed and _forwarded(request) else None
    try:
        return serving_route(name=model, user=user, rng=rng)
    except NotFound as error:
        raise InferenceError(
            error.message, status=404, param="model", code="model_not_found"
        ) from None
    except ArtifactError as error:
        raise artifacts_unavailable(model, error) from None


def _engine_error(error: EngineError) -> InferenceError:
    message = str(error)
    if "context" in message and "prompt" in message:
        return InferenceError(
            message, param="max_tokens", code="context_length_exceeded"
        )
    return InferenceError(
        f"The model could not answer: {message}",
        status=503,
        type="server_error",
        code="model_unavailable",
    )


# ---------------------------------------------------------------- endpoints


@_api("GET")
def model_list(request: HttpRequest) -> HttpResponse:
    """Every model name the caller can use now."""
    _caller(request)
    return JsonResponse(
        {"object": "list", "data": [_model_object(m) for m in served_model_list()]}
    )


@_api("GET")
def model_detail(request: HttpRequest, model: str) -> HttpResponse:
    _caller(request)
    for listed in served_model_list():
        if listed.name == model:
            return JsonResponse(_model_object(listed))
    _route(model, "")  # says why it is not served
    raise InferenceError(
        f"The model '{model}' does not exist.",
        status=404,
        param="model",
        code="model_not_found",
    )


def _model_object(listed: Any) -> dict[str, Any]:
    data = {
        "id": listed.name,
        "object": "model",
        "created": listed.created,
        "owned_by": "arbiter",
        "kind": listed.kind,
    }
    if listed.target:
        data["serves"] = listed.target
    return data


@_api("POST")
def chat_completions(request: HttpRequest) -> HttpResponse:
    return _counted(request, parse_chat)


@_api("POST")
def completions(request: HttpRequest) -> HttpResponse:
    return _counted(request, parse_completion)


@_api("GET")
def health(request: HttpRequest) -> HttpResponse:
    """Liveness for process supervisors (no token, loads nothing)."""
    return JsonResponse({"status": "ok"})


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return _replica_named(
        error_response(
            InferenceError(
                f"Unknown path {request.path}: this service answers /v1/models, "
                "/v1/chat/completions and /v1/completions.",
                status=404,
                code="unknown_url",
            )
        )
    )


@_api("GET")
def internal_status(request: HttpRequest) -> HttpResponse:
    """What this replica holds and how busy it is, for the router (the
    shared secret in ``X-Arbiter-Router``; without it the path does not
    exist). Loads nothing and reads no database."""
    if not _forwarded(request):
        return not_found(request)
    engine = engine_loaded()
    versions: list[str] = []
    if engine is not None:
        if base := activity.base_of(engine):
            versions.append(base)
        versions += _engine_names(engine)
    return JsonResponse(
        {
            "replica": replica_id(),
            "pid": os.getpid(),
            "engine": engine is not None,
            "versions": versions,
            "active": activity.active,
            "answered": activity.answered,
            "max_adapters": setting("ARBITER_INFERENCE_MAX_ADAPTERS"),
        }
    )


def _engine_names(engine: Any) -> list[str]:
    """Adapters and merged exports the engine holds (its scheduler thread
    may change them while they are read: read again)."""
    for _ in range(5):
        try:
            return [*engine.adapters, *engine.merged]
        except RuntimeError:  # mutated during iteration
            continue
    return []


# ---------------------------------------------------------------- answering


@dataclasses.dataclass
class _Answer:
    """One request on its way through the engine."""

    request: CompletionRequest
    route: Route
    caller: AbstractBaseUser
    public_id: str
    created: int
    started: float
    prompt_text: str
    prompt_tokens: int
    params: SamplingParams
    engine: Any

    @property
    def object_name(self) -> str:
        return "chat.completion" if self.request.endpoint == CHAT else "text_completion"

    def headers(self, response: HttpResponse) -> HttpResponse:
        response["X-Arbiter-Version"] = self.route.version.name
        response["X-Arbiter-Response-Id"] = self.public_id
        return response

    def record(self, result: Completed) -> ServedResponse:
        route = self.route
        if route.sample and not sampling_has_room():
            route = dataclasses.replace(route, sample=False, other=None)
        served = served_response_record(
            public_id=self.public_id,
            endpoint=ServedResponse.Endpoint.CHAT
            if self.request.endpoint == CHAT
            else ServedResponse.Endpoint.COMPLETION,
            route=route,
            caller=self.caller,
            end_user=self.request.user,
            prompt=self.request.recorded_prompt,
            text=result.text,
            finish_reason=result.finish_reason,
            prompt_tokens=result.prompt_tokens,
            completion_tokens=result.completion_tokens,
            latency_ms=(time.monotonic() - self.started) * 1000,
        )
        if route.sample and route.other is not None:
            sampling_submit(
                engine=self.engine,
                public_id=self.public_id,
                other=route.other,
                prompt=self.prompt_text,
                params=self.params,
            )
        return served

    def usage(self, result: Completed) -> dict[str, int]:
        return {
            "prompt_tokens": result.prompt_tokens,
            "completion_tokens": result.completion_tokens,
            "total_tokens": result.prompt_tokens + result.completion_tokens,
        }

    def envelope(self, choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        obj = self.object_name
        if self.request.stream and self.request.endpoint == CHAT:
            obj += ".chunk"
        return {
            "id": self.public_id,
            "object": obj,
            "created": self.created,
            "model": self.route.version.name,
            "system_fingerprint": None,
            "choices": choices,
            **extra,
        }


class _Leaving:
    """A streamed body that counts as activity until it ends or is closed."""

    def __init__(self, content: Iterator[Any]) -> None:
        self._content = iter(content)
        self._left = False

    def __iter__(self) -> _Leaving:
        return self

    def __next__(self) -> Any:
        try:
            return next(self._content)
        except StopIteration:
            self.close()
            raise

    def close(self) -> None:
        if not self._left:
            self._left = True
            activity.leave()


def _counted(
    request: HttpRequest, parse: Callable[[dict[str, Any]], CompletionRequest]
) -> HttpResponse:
    """``_complete`` counted in the replica's activity while it answers."""
    activity.enter()
    try:
        response = _complete(request, parse)
    except BaseException:
        activity.leave()
        raise
    if isinstance(response, StreamingHttpResponse):
        response.streaming_content = _Leaving(response.streaming_content)
    else:
        activity.leave()
    return response


def _complete(
    request: HttpRequest, parse: Callable[[dict[str, Any]], CompletionRequest]
) -> HttpResponse:
    started = time.monotonic()
    caller = _caller(request)
    parsed = parse(parse_json(request.body))
    route = _route(parsed.model, parsed.user, request)
    try:
        engine = engine_for(route.version.base_model)
    except EngineError as error:
        raise _engine_error(error) from None
    activity.note_base(engine, f"base-{route.version.base_model.pk}")
    try:
        prompt_text = (
            engine.chat_prompt(parsed.messages)
            if parsed.messages is not None
            else parsed.prompt or ""
        )
    except (EngineError, TemplateError, ValueError, TypeError) as error:
        # e.g. a template that insists on alternating user/assistant turns
        raise InferenceError(
            f"'messages' do not fit the model's chat template: {error}",
            param="messages",
        ) from None
    prompt_tokens = engine.count_tokens(prompt_text)
    max_tokens = context_check(
        parsed,
        prompt_tokens=prompt_tokens,
        context=engine.max_context,
        default_max=setting("ARBITER_INFERENCE_DEFAULT_MAX_TOKENS"),
    )
    answer = _Answer(
        request=parsed,
        route=route,
        caller=caller,
        public_id=("chatcmpl-" if parsed.endpoint == CHAT else "cmpl-")
        + uuid.uuid4().hex,
        created=int(time.time()),
        started=started,
        prompt_text=prompt_text,
        prompt_tokens=prompt_tokens,
        params=SamplingParams(
            max_tokens=max_tokens,
            temperature=parsed.temperature,
            top_p=parsed.top_p,
            stop=parsed.stop,
            seed=parsed.seed,
        ),
        engine=engine,
    )
    try:
        stream = engine.submit(served_model(route.version), prompt_text, answer.params)
    except EngineError as error:
        raise _engine_error(error) from None
    if parsed.stream:
        return _streamed(answer, stream)
    try:
        result = stream.result
    except EngineError as error:
        raise _engine_error(error) from None
    answer.record(result)
    if parsed.endpoint == CHAT:
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": result.text},
            "finish_reason": result.finish_reason,
            "logprobs": None,
        }
    else:
        choice = {
            "index": 0,
            "text": result.text,
            "finish_reason": result.finish_reason,
            "logprobs": None,
        }
    return answer.headers(
        JsonResponse(answer.envelope([choice], usage=answer.usage(result)))
    )


def _sse(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


def _streamed(answer: _Answer, stream: TokenStream) -> HttpResponse:
    """Server-sent events. The first token is awaited before the response
    starts, so a version that cannot load is still a plain 503."""
    deltas = iter(stream)
    try:
        first = next(deltas, None)
    except EngineError as error:
        raise _engine_error(error) from None
    response = StreamingHttpResponse(
        _events(answer, stream, first, deltas), content_type="text/event-stream"
    )
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return answer.headers(response)


def _delta_choice(
    answer: _Answer, text: str | None, finish: str | None, *, role: bool = False
) -> dict[str, Any]:
    if answer.request.endpoint == CHAT:
        delta: dict[str, Any] = {}
        if role:
            delta = {"role": "assistant", "content": ""}
        elif text is not None:
            delta = {"content": text}
        return {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
    return {"index": 0, "text": text or "", "finish_reason": finish, "logprobs": None}


def _events(
    answer: _Answer, stream: TokenStream, first: str | None, deltas: Iterator[str]
) -> Iterator[str]:
    usage_extra = {"usage": None} if answer.request.include_usage else {}
    sent: list[str] = []
    result: Completed | None = None
    failed = False
    try:
        if answer.request.endpoint == CHAT:
            role = _delta_choice(answer, None, None, role=True)
            yield _sse(answer.envelope([role], **usage_extra))
        for delta in itertools.chain([] if first is None else [first], deltas):
            sent.append(delta)
            choice = _delta_choice(answer, delta, None)
            yield _sse(answer.envelope([choice], **usage_extra))
        result = stream.result
        last = _delta_choice(answer, None, result.finish_reason)
        yield _sse(answer.envelope([last], **usage_extra))
        if answer.request.include_usage:
            yield _sse(answer.envelope([], usage=answer.usage(result)))
        yield "data: [DONE]\n\n"
    except EngineError as error:
        failed = True
        logger.warning(
            "inference.stream.failed id=%s error=%s", answer.public_id, error
        )
        yield _sse(error_body(_engine_error(error)))
    finally:
        if result is None:
            stream.cancel()  # the client went away (or the engine failed)
        if not failed:
            _record_stream_end(answer, sent, result)


def _record_stream_end(
    answer: _Answer, sent: list[str], result: Completed | None
) -> None:
    """Record a stream once it ended: whole, or cut by the client (what was
    sent, ``finish_reason`` "cancelled"). A stream the engine failed is not
    an answer and is not recorded."""
    if result is None:
        text = "".join(sent)
        result = Completed(
            text=text,
            finish_reason="cancelled",
            prompt_tokens=answer.prompt_tokens,
            completion_tokens=answer.engine.count_tokens(text) if text else 0,
        )
    try:
        answer.record(result)
    except DatabaseError:
        logger.exception("inference.stream.record_failed id=%s", answer.public_id)
