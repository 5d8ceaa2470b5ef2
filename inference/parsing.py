"""Request bodies of ``/v1/chat/completions`` and ``/v1/completions``,
checked field by field; a bad field raises ``InferenceError`` (400) whose
message and ``param`` name it."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from inference.errors import InferenceError, invalid

CHAT = "chat"
COMPLETION = "completion"
MAX_STOP = 4
# OpenAI's "developer" role is its newer name for "system".
ROLES = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
}
# Fields we cannot honour: refused rather than silently ignored.
UNSUPPORTED = ("tools", "functions", "tool_choice", "logprobs", "top_logprobs")


@dataclass(frozen=True)
class CompletionRequest:
    endpoint: str  # CHAT or COMPLETION
    model: str
    prompt: str | None  # completions
    messages: list[dict[str, str]] | None  # chat, normalised
    max_tokens: int | None
    temperature: float
    top_p: float
    stop: tuple[str, ...]
    seed: int | None
    user: str
    stream: bool
    include_usage: bool

    @property
    def prompt_field(self) -> str:
        return "messages" if self.endpoint == CHAT else "prompt"

    @property
    def recorded_prompt(self) -> str | list[dict[str, str]]:
        return self.messages if self.messages is not None else (self.prompt or "")


def parse_json(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object."""
    try:
        body = json.loads(raw or b"null", parse_constant=_refuse_constant)
    except (ValueError, UnicodeDecodeError) as error:
        raise invalid(
            f"The request body is not valid JSON: {error}.", param=None
        ) from None
    except RecursionError:
        raise invalid(
            "The request body is not valid JSON: it is nested too deeply.",
            param=None,
        ) from None
    if not isinstance(body, dict):
        raise invalid(
            "The request body must be a JSON object, e.g. "
            '{"model": "base", "messages": [...]}.',
            param=None,
        )
    return body


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _type_name(value: Any) -> str:
    return {
        type(None): "null",
        bool: "boolean",
        int: "integer",
        float: "number",
        str: "string",
        list: "array",
        dict: "object",
    }.get(type(value), type(value).__name__)


def _string(body: dict[str, Any], name: str, *, required: bool = False) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise invalid(f"'{name}' is required.", param=name)
        return None
    if not isinstance(value, str):
        raise invalid(
            f"'{name}' must be a string, not {_type_name(value)}.", param=name
        )
    return value


def _int(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(
            f"'{name}' must be an integer, not {_type_name(value)}.", param=name
        )
    return value


def _number(
    body: dict[str, Any],
    name: str,
    *,
    default: float,
    low: float,
    high: float,
    low_open: bool,
) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise invalid(
            f"'{name}' must be a number, not {_type_name(value)}.", param=name
        )
    value = float(value)
    below = value <= low if low_open else value < low
    if math.isnan(value) or below or value > high:
        bracket = "(" if low_open else "["
        raise invalid(
            f"'{name}' must be in {bracket}{low:g}, {high:g}]; got {value:g}.",
            param=name,
        )
    return value


def _bool(body: dict[str, Any], name: str) -> bool:
    value = body.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise invalid(
            f"'{name}' must be a boolean, not {_type_name(value)}.", param=name
        )
    return value


def _stop(body: dict[str, Any]) -> tuple[str, ...]:
    value = body.get("stop")
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
        raise invalid(
            "'stop' must be a string or an array of up to 4 strings.", param="stop"
        )
    if len(items) > MAX_STOP:
        raise invalid(
            f"'stop' takes at most {MAX_STOP} strings; got {len(items)}.", param="stop"
        )
    if any(not s for s in items):
        raise invalid("'stop' strings must not be empty.", param="stop")
    return tuple(items)


def _common(body: dict[str, Any], endpoint: str) -> dict[str, Any]:
    model = _string(body, "model", required=True)
    assert model is not None
    if not model.strip():
        raise invalid(
            "'model' must name a model (GET /v1/models lists them).", param="model"
        )
    for name in UNSUPPORTED:
        if body.get(name):
            raise invalid(f"'{name}' is not supported by this API.", param=name)
    n = _int(body, "n")
    if n is not None and n != 1:
        raise invalid(f"'n' must be 1 (one choice per request); got {n}.", param="n")
    max_tokens = _int(body, "max_tokens")
    param = "max_tokens"
    if endpoint == CHAT and body.get("max_completion_tokens") is not None:
        max_tokens = _int(body, "max_completion_tokens")
        param = "max_completion_tokens"
    if max_tokens is not None and max_tokens < 1:
        raise invalid(f"'{param}' must be at least 1; got {max_tokens}.", param=param)
    seed = _int(body, "seed")
    if seed is not None and not -(2**63) <= seed < 2**64:
        raise invalid("'seed' must fit in 64 bits.", param="seed")
    stream = _bool(body, "stream")
    options = body.get("stream_options")
    include_usage = False
    if options is not None:
        if not isinstance(options, dict):
            raise invalid(
                f"'stream_options' must be an object, not {_type_name(options)}.",
                param="stream_options",
            )
        if not stream:
            raise invalid(
                "'stream_options' is only allowed when 'stream' is true.",
                param="stream_options",
            )
        include_usage = _bool(options, "include_usage")
    return {
        "model": model.strip(),
        "max_tokens": max_tokens,
        "temperature": _number(
            body, "temperature", default=1.0, low=0.0, high=2.0, low_open=False
        ),
        "top_p": _number(body, "top_p", default=1.0, low=0.0, high=1.0, low_open=True),
        "stop": _stop(body),
        "seed": seed,
        "user": (_string(body, "user") or "")[:200],
        "stream": stream,
        "include_usage": include_usage,
    }


def _message_content(message: dict[str, Any], index: int) -> str:
    param = f"messages[{index}].content"
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if (
                not isinstance(part, dict)
                or part.get("type") != "text"
                or not isinstance(part.get("text"), str)
            ):
                raise invalid(
                    f"'{param}' parts must be text parts "
                    '({"type": "text", "text": "..."}); only text is supported.',
                    param=param,
                )
            parts.append(part["text"])
        return "".join(parts)
    if content is None:
        raise invalid(f"'{param}' is required.", param=param)
    raise invalid(
        f"'{param}' must be a string or an array of text parts, not "
        f"{_type_name(content)}.",
        param=param,
    )


def _messages(body: dict[str, Any]) -> list[dict[str, str]]:
    messages = body.get("messages")
    if messages is None:
        raise invalid("'messages' is required.", param="messages")
    if not isinstance(messages, list):
        raise invalid(
            f"'messages' must be an array, not {_type_name(messages)}.",
            param="messages",
        )
    if not messages:
        raise invalid("'messages' must hold at least one message.", param="messages")
    normalised = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise invalid(
                f"'messages[{index}]' must be an object, not {_type_name(message)}.",
                param=f"messages[{index}]",
            )
        role = message.get("role")
        if not isinstance(role, str) or role not in ROLES:
            raise invalid(
                f"'messages[{index}].role' must be one of "
                f"{', '.join(sorted(ROLES))}; got {role!r}.",
                param=f"messages[{index}].role",
            )
        normalised.append(
            {"role": ROLES[role], "content": _message_content(message, index)}
        )
    if any("\x00" in m["content"] for m in normalised):
        raise invalid("'messages' must not contain NUL characters.", param="messages")
    return normalised


def parse_chat(body: dict[str, Any]) -> CompletionRequest:
    common = _common(body, CHAT)
    return CompletionRequest(
        endpoint=CHAT, prompt=None, messages=_messages(body), **common
    )


def parse_completion(body: dict[str, Any]) -> CompletionRequest:
    common = _common(body, COMPLETION)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]  # a batch of one prompt
    if prompt is None:
        raise invalid("'prompt' is required.", param="prompt")
    if not isinstance(prompt, str):
        raise invalid(
            f"'prompt' must be a string (one prompt per request), not "
            f"{_type_name(prompt)}.",
            param="prompt",
        )
    if "\x00" in prompt:
        raise invalid("'prompt' must not contain NUL characters.", param="prompt")
    return CompletionRequest(
        endpoint=COMPLETION, prompt=prompt, messages=None, **common
    )


def context_check(
    request: CompletionRequest, *, prompt_tokens: int, context: int, default_max: int
) -> int:
    """The max_tokens the request runs with: its own, or ``default_max``
    capped by the context left. Raises 400 ``context_length_exceeded`` when
    the prompt and max_tokens do not fit the model's context."""
    if request.max_tokens is not None:
        if prompt_tokens + request.max_tokens > context:
            raise InferenceError(
                f"This model's maximum context length is {context} tokens; the "
                f"request asks for {prompt_tokens + request.max_tokens} "
                f"({prompt_tokens} in the {request.prompt_field}, "
                f"{request.max_tokens} in max_tokens). Shorten the "
                f"{request.prompt_field} or lower max_tokens.",
                param="max_tokens",
                code="context_length_exceeded",
            )
        return request.max_tokens
    left = context - prompt_tokens
    if left < 1:
        raise InferenceError(
            f"This model's maximum context length is {context} tokens; the "
            f"{request.prompt_field} alone has {prompt_tokens}.",
            param=request.prompt_field,
            code="context_length_exceeded",
        )
    return min(default_max, left)
