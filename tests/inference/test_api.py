"""The OpenAI-compatible inference API, in-process (Django's test client and
the process-wide serving engine over the tiny base)."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.test import Client
from rest_framework.authtoken.models import Token

from core.roles import ANNOTATOR
from core.services import user_create
from inference.engine import engine_for, engine_loaded
from inference.sampling import sampling_wait
from labeling.models import Comparison, Prompt
from models_hub.models import Adapter, Deployment, ServedResponse
from models_hub.services.registry import adapter_register
from models_hub.services.serving import served_base, user_point

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
HELLO = [{"role": "user", "content": "tell me about the cat ."}]


def post(client: Client, path: str, body: Any) -> Any:
    raw = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return client.post(path, raw, content_type="application/json")


def events(response: Any) -> list[Any]:
    """The SSE stream's data lines, JSON-decoded ([DONE] kept as a string)."""
    assert response["Content-Type"].startswith("text/event-stream")
    text = b"".join(response.streaming_content).decode()
    assert text.endswith("data: [DONE]\n\n"), text[-200:]
    out = []
    for block in text.split("\n\n"):
        if block:
            assert block.startswith("data: ")
            data = block[len("data: ") :]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


@pytest.mark.django_db
def test_chat_completion_answers_and_records_the_version(
    api: Client, served: dict[str, Any]
) -> None:
    """A whole chat answer in OpenAI's shape, the served version in `model`
    and the headers, and one ServedResponse recording it."""
    adapter = served["adapters"][1]
    response = post(
        api,
        CHAT,
        {
            "model": f"adapter-{adapter.pk}",
            "messages": HELLO,
            "max_tokens": 6,
            "temperature": 0,
            "user": "end-user-1",
        },
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-")
    assert body["model"] == f"adapter-{adapter.pk}"
    assert response["X-Arbiter-Version"] == f"adapter-{adapter.pk}"
    assert response["X-Arbiter-Response-Id"] == body["id"]
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert choice["finish_reason"] in ("stop", "length")
    usage = body["usage"]
    assert usage["completion_tokens"] <= 6
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]

    row = ServedResponse.objects.get(public_id=body["id"])
    assert row.endpoint == ServedResponse.Endpoint.CHAT
    assert (row.requested_model, row.served_model) == (body["model"],) * 2
    assert row.adapter == adapter and row.base_model == served["base"]
    assert not row.merged and row.campaign is None and row.arm == ""
    assert row.caller == served["caller"] and row.end_user == "end-user-1"
    assert row.prompt == HELLO
    assert row.text == choice["message"]["content"]
    assert row.completion_tokens == usage["completion_tokens"]
    assert row.latency_ms > 0


@pytest.mark.django_db
def test_completion_answers_a_prompt_string(
    api: Client, served: dict[str, Any]
) -> None:
    response = post(
        api,
        COMPLETIONS,
        {"model": "base", "prompt": "tell me about the river .", "max_tokens": 5},
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["object"] == "text_completion" and body["id"].startswith("cmpl-")
    assert body["model"] == f"base-{served['base'].pk}"
    assert isinstance(body["choices"][0]["text"], str)
    row = ServedResponse.objects.get(public_id=body["id"])
    assert row.requested_model == "base" and row.served_model == body["model"]
    assert row.adapter is None and row.endpoint == ServedResponse.Endpoint.COMPLETION
    assert row.prompt == "tell me about the river ."


@pytest.mark.django_db
def test_chat_stream_sends_role_deltas_finish_usage_and_done(
    api: Client, served: dict[str, Any]
) -> None:
    """Chat chunks: the first carries the role, the deltas join to the
    recorded text, the last choice carries finish_reason, usage comes last
    when asked for, then [DONE]."""
    champion = served["champion"]
    response = post(
        api,
        CHAT,
        {
            "model": f"adapter-{champion.pk}",
            "messages": HELLO,
            "max_tokens": 8,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    )
    assert response.status_code == 200
    assert response["X-Arbiter-Version"] == f"adapter-{champion.pk}"
    chunks = events(response)
    assert chunks[-1] == "[DONE]"
    data = chunks[:-1]
    assert all(c["object"] == "chat.completion.chunk" for c in data)
    assert len({c["id"] for c in data}) == 1
    assert data[0]["choices"][0]["delta"]["role"] == "assistant"
    usage_chunk = data[-1]
    assert usage_chunk["choices"] == []
    finish = data[-2]["choices"][0]
    assert finish["finish_reason"] in ("stop", "length") and finish["delta"] == {}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in data[1:-2])
    assert all(c["usage"] is None for c in data[:-1])

    row = ServedResponse.objects.get(public_id=data[0]["id"])
    assert row.text == text
    assert row.finish_reason == finish["finish_reason"]
    assert row.completion_tokens == usage_chunk["usage"]["completion_tokens"]
    whole = post(
        api,
        CHAT,
        {
            "model": f"adapter-{champion.pk}",
            "messages": HELLO,
            "max_tokens": 8,
            "temperature": 0,
        },
    ).json()
    assert whole["choices"][0]["message"]["content"] == text  # greedy: the same


@pytest.mark.django_db
def test_completion_stream_sends_text_chunks(
    api: Client, served: dict[str, Any]
) -> None:
    response = post(
        api,
        COMPLETIONS,
        {"model": "base", "prompt": "the storm", "max_tokens": 5, "stream": True},
    )
    assert response.status_code == 200
    chunks = events(response)[:-1]
    assert all(c["object"] == "text_completion" for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    assert "usage" not in chunks[0]
    text = "".join(c["choices"][0]["text"] for c in chunks)
    assert ServedResponse.objects.get(public_id=chunks[0]["id"]).text == text


@pytest.mark.django_db(transaction=True)  # closing ends the request: connections close
def test_a_stream_the_client_leaves_is_cancelled_and_recorded(
    api: Client, served: dict[str, Any]
) -> None:
    """Closing the response (the client disconnected) cancels the row and
    records what was sent with finish_reason 'cancelled'."""
    response = post(
        api,
        COMPLETIONS,
        {
            "model": "base",
            "prompt": "the city",
            "max_tokens": 200,
            "stream": True,
            "stop": ["\u2603"],
        },
    )
    stream = iter(response.streaming_content)
    first = json.loads(next(stream).decode()[len("data: ") :])
    response.close()
    row = ServedResponse.objects.get(public_id=first["id"])
    assert row.finish_reason == "cancelled"
    assert row.text == first["choices"][0]["text"]


@pytest.mark.django_db
def test_switching_versions_per_request_never_reloads_the_base(
    api: Client, served: dict[str, Any], merged_folder: str
) -> None:
    """The base and three adapters (and a merged export) answer in turn from
    one loaded base: base_loads stays 1 while adapters attach; the adapters
    answer differently from the base."""
    Adapter.objects.filter(pk=served["adapters"][0].pk).update(
        merged_path=merged_folder
    )
    names = ["base"] + [f"adapter-{a.pk}" for a in served["adapters"]]
    texts = {}
    for _ in range(2):
        for name in names:
            response = post(
                api,
                COMPLETIONS,
                {
                    "model": name,
                    "prompt": "tell me about the garden .",
                    "max_tokens": 8,
                    "temperature": 0,
                },
            )
            assert response.status_code == 200, response.content
            texts[name] = response.json()["choices"][0]["text"]
    merged = post(
        api,
        COMPLETIONS,
        {
            "model": f"adapter-{served['adapters'][0].pk}-merged",
            "prompt": "tell me about the garden .",
            "max_tokens": 8,
            "temperature": 0,
        },
    )
    assert merged.status_code == 200, merged.content
    assert merged.json()["choices"][0]["text"] == texts[names[1]]
    assert ServedResponse.objects.get(public_id=merged.json()["id"]).merged

    engine = engine_loaded()
    assert engine is not None
    assert engine.counters["base_loads"] == 1
    assert engine.counters["adapter_loads"] >= 1
    assert len(set(texts.values())) > 1
    served_names = set(ServedResponse.objects.values_list("served_model", flat=True))
    assert served_names >= {f"base-{served['base'].pk}", *names[1:]}


@pytest.mark.django_db
def test_models_lists_served_versions_and_hides_switched_off_ones(
    api: Client, served: dict[str, Any], merged_folder: str
) -> None:
    first, second, third = served["adapters"]
    Adapter.objects.filter(pk=second.pk).update(serving_enabled=False)
    Adapter.objects.filter(pk=third.pk).update(status=Adapter.Status.RETIRED)
    Adapter.objects.filter(pk=first.pk).update(merged_path=merged_folder)
    response = api.get("/v1/models")
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "list"
    ids = {m["id"] for m in body["data"]}
    alias = f"campaign-{served['campaign'].pk}/champion"
    assert {"base", f"base-{served['base'].pk}", f"adapter-{first.pk}"} <= ids
    assert {f"adapter-{first.pk}-merged", alias} <= ids
    assert f"adapter-{second.pk}" not in ids  # switched off
    assert f"adapter-{third.pk}" not in ids  # retired
    assert f"adapter-{served['reward'].pk}" not in ids  # a reward model
    entry = next(m for m in body["data"] if m["id"] == alias)
    assert entry["object"] == "model" and entry["serves"] == f"adapter-{first.pk}"

    off = post(api, CHAT, {"model": f"adapter-{second.pk}", "messages": HELLO})
    assert off.status_code == 404
    assert off.json()["error"]["code"] == "model_not_found"
    assert "switched off" in off.json()["error"]["message"]
    assert api.get(f"/v1/models/{alias}").json()["id"] == alias
    assert api.get(f"/v1/models/adapter-{second.pk}").status_code == 404


@pytest.mark.django_db
def test_the_alias_answers_with_the_champion_and_records_campaign_and_arm(
    api: Client, served: dict[str, Any]
) -> None:
    alias = f"campaign-{served['campaign'].pk}/champion"
    response = post(api, CHAT, {"model": alias, "messages": HELLO, "max_tokens": 3})
    assert response.status_code == 200, response.content
    champion = f"adapter-{served['champion'].pk}"
    assert response.json()["model"] == champion
    assert response["X-Arbiter-Version"] == champion
    row = ServedResponse.objects.get(public_id=response.json()["id"])
    assert row.requested_model == alias and row.served_model == champion
    assert row.campaign == served["campaign"]
    assert row.arm == ServedResponse.Arm.CHAMPION
    assert not row.sampled


@pytest.mark.django_db
def test_an_ab_deployment_sends_users_to_both_arms_stickily(
    api: Client, served: dict[str, Any]
) -> None:
    candidate = served["adapters"][1]
    deployment = Deployment.objects.create(
        campaign=served["campaign"], mode=Deployment.Mode.AB, candidate=candidate
    )
    alias = f"campaign-{served['campaign'].pk}/champion"
    # Users on both sides of 0.5 (their points depend on the deployment's id).
    points = {
        f"u{i}": user_point(deployment_id=deployment.pk, user=f"u{i}")
        for i in range(64)
    }
    users = [
        next(u for u, p in points.items() if p < 0.5),
        next(u for u, p in points.items() if p >= 0.5),
        "u60",
        "u61",
        "u62",
        "u63",
    ]
    seen: dict[str, set[str]] = {}
    for user in users:
        for _ in range(2):
            response = post(
                api,
                CHAT,
                {"model": alias, "messages": HELLO, "max_tokens": 2, "user": user},
            )
            seen.setdefault(user, set()).add(response.json()["model"])
    assert all(len(models) == 1 for models in seen.values())  # sticky
    assert set().union(*seen.values()) == {
        f"adapter-{served['champion'].pk}",
        f"adapter-{candidate.pk}",
    }
    arms = set(ServedResponse.objects.values_list("arm", flat=True))
    assert arms == {"champion", "candidate"}


@pytest.mark.django_db(transaction=True)
def test_sampled_traffic_becomes_a_queued_comparison_with_lineage(
    api: Client, served: dict[str, Any]
) -> None:
    """With sample_share 1.0 the other version (here the champion, for a
    candidate's answer, or the reverse) answers too, in the background; the
    pair is queued in the campaign with traffic lineage and the served
    response points at it."""
    candidate = served["adapters"][1]
    Deployment.objects.create(
        campaign=served["campaign"],
        mode=Deployment.Mode.CANARY,
        candidate=candidate,
        candidate_share=0.5,
        sample_share=1.0,
    )
    alias = f"campaign-{served['campaign'].pk}/champion"
    messages = [{"role": "user", "content": "tell me about the train ."}]
    response = post(
        api,
        CHAT,
        {"model": alias, "messages": messages, "max_tokens": 10, "temperature": 0},
    )
    assert response.status_code == 200, response.content
    public_id = response.json()["id"]
    sampling_wait(timeout=60)
    row = ServedResponse.objects.get(public_id=public_id)
    assert row.sampled
    assert row.comparison is not None, "identical answers make no pair"
    comparison = row.comparison
    assert comparison.campaign == served["campaign"]
    assert comparison.status == Comparison.Status.OPEN
    prompt = comparison.prompt
    assert prompt.messages == messages and prompt.metadata == {"source": "traffic"}
    assert prompt.split in {s.value for s in Prompt.Split}
    sides = [comparison.completion_a, comparison.completion_b]
    assert {c.adapter_id for c in sides} == {served["champion"].pk, candidate.pk}
    for completion in sides:
        assert completion.generation["source"] == "traffic"
        assert completion.generation["served_response"] == public_id
        assert completion.generation["adapter"] == completion.adapter_id
        assert completion.generation["base_model"] == served["base"].pk
    mine = next(c for c in sides if c.adapter == row.adapter)
    assert mine.text == (row.text or "(empty completion)")


# ---------------------------------------------------------------- errors


@pytest.mark.django_db
def test_missing_or_wrong_token_is_401(served: dict[str, Any]) -> None:
    for headers in (
        {},
        {"HTTP_AUTHORIZATION": "Bearer nope"},
        {"HTTP_AUTHORIZATION": "Basic x"},
    ):
        response = Client(**headers).post(
            CHAT,
            json.dumps({"model": "base", "messages": HELLO}),
            content_type="application/json",
        )
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "invalid_api_key"
    assert Client().get("/v1/models").status_code == 401


@pytest.mark.django_db
def test_wrong_method_is_405_and_unknown_paths_404(api: Client) -> None:
    response = api.get(CHAT)
    assert response.status_code == 405
    assert response["Allow"] == "POST"
    assert response.json()["error"]["code"] == "method_not_allowed"
    assert api.post("/v1/models").status_code == 405
    assert api.get("/v1/embeddings").status_code == 404


@pytest.mark.django_db
def test_unknown_or_unservable_models_are_404(
    api: Client, served: dict[str, Any]
) -> None:
    campaign = served["campaign"]
    for name in (
        "gpt-4o",
        "adapter-999999",
        f"adapter-{served['reward'].pk}",
        f"adapter-{served['adapters'][1].pk}-merged",  # never exported
        "base-999999",
        "campaign-999999/champion",
        f"campaign-{campaign.pk}/candidate",
    ):
        response = post(api, CHAT, {"model": name, "messages": HELLO})
        assert response.status_code == 404, name
        error = response.json()["error"]
        assert error["code"] == "model_not_found" and error["param"] == "model"
        assert name.split("/")[0] in error["message"]


BAD_BODIES = [
    ("not json", None, CHAT),
    ("[1, 2]", None, CHAT),
    ({"messages": HELLO}, "model", CHAT),
    ({"model": 3, "messages": HELLO}, "model", CHAT),
    ({"model": "base"}, "messages", CHAT),
    ({"model": "base", "messages": "hi"}, "messages", CHAT),
    ({"model": "base", "messages": []}, "messages", CHAT),
    ({"model": "base", "messages": ["hi"]}, "messages[0]", CHAT),
    (
        {"model": "base", "messages": [{"role": "wizard", "content": "x"}]},
        "messages[0].role",
        CHAT,
    ),
    ({"model": "base", "messages": [{"role": "user"}]}, "messages[0].content", CHAT),
    (
        {"model": "base", "messages": [{"role": "user", "content": 5}]},
        "messages[0].content",
        CHAT,
    ),
    ({"model": "base", "messages": HELLO, "temperature": 2.5}, "temperature", CHAT),
    ({"model": "base", "messages": HELLO, "temperature": "hot"}, "temperature", CHAT),
    ({"model": "base", "messages": HELLO, "top_p": 0}, "top_p", CHAT),
    ({"model": "base", "messages": HELLO, "top_p": 1.5}, "top_p", CHAT),
    ({"model": "base", "messages": HELLO, "max_tokens": 0}, "max_tokens", CHAT),
    ({"model": "base", "messages": HELLO, "max_tokens": 1.5}, "max_tokens", CHAT),
    (
        {"model": "base", "messages": HELLO, "max_completion_tokens": -1},
        "max_completion_tokens",
        CHAT,
    ),
    ({"model": "base", "messages": HELLO, "max_tokens": 10**9}, "max_tokens", CHAT),
    ({"model": "base", "messages": HELLO, "n": 2}, "n", CHAT),
    (
        {"model": "base", "messages": HELLO, "stop": ["a", "b", "c", "d", "e"]},
        "stop",
        CHAT,
    ),
    ({"model": "base", "messages": HELLO, "stop": [1]}, "stop", CHAT),
    ({"model": "base", "messages": HELLO, "stream": "yes"}, "stream", CHAT),
    (
        {"model": "base", "messages": HELLO, "stream_options": {"include_usage": True}},
        "stream_options",
        CHAT,
    ),
    ({"model": "base", "messages": HELLO, "seed": "1"}, "seed", CHAT),
    (
        {"model": "base", "messages": HELLO, "tools": [{"type": "function"}]},
        "tools",
        CHAT,
    ),
    ({"model": "base"}, "prompt", COMPLETIONS),
    ({"model": "base", "prompt": ["a", "b"]}, "prompt", COMPLETIONS),
    ({"model": "base", "prompt": {"text": "a"}}, "prompt", COMPLETIONS),
    ({"model": "base", "prompt": "a", "temperature": -1}, "temperature", COMPLETIONS),
    ({"model": "base", "prompt": "a", "max_tokens": True}, "max_tokens", COMPLETIONS),
]


@pytest.mark.django_db
@pytest.mark.parametrize(("body", "param", "path"), BAD_BODIES)
def test_bad_bodies_are_400_naming_the_field(
    api: Client, body: Any, param: str | None, path: str
) -> None:
    response = post(api, path, body)
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    if param is not None:
        assert param.split("[")[0] in error["message"]
    assert not ServedResponse.objects.exists()


@pytest.mark.django_db
def test_a_body_nested_too_deeply_is_400_not_500(api: Client) -> None:
    """json.loads gives up on deep nesting with a RecursionError: a 400."""
    for path in (CHAT, COMPLETIONS):
        response = api.post(path, b"[" * 100_000, content_type="application/json")
        assert response.status_code == 400, response.content
        assert "nested too deeply" in response.json()["error"]["message"]
    assert not ServedResponse.objects.exists()


@pytest.mark.django_db
def test_a_fuzz_of_bodies_never_gets_a_500(api: Client) -> None:
    """Random JSON values in every field: always a 4xx or 200, never a 500."""
    rng = random.Random(7)
    values = [
        None,
        True,
        0,
        -1,
        1.5,
        10**30,
        "",
        "x",
        [],
        [1],
        {},
        {"a": 1},
        "\u0000",
        [{"role": "user", "content": "hi"}],
        float("1e308"),
    ]
    fields = [
        "model",
        "messages",
        "prompt",
        "max_tokens",
        "temperature",
        "top_p",
        "stop",
        "seed",
        "user",
        "n",
        "stream",
        "stream_options",
    ]
    for _ in range(60):
        body = {"model": "base", "messages": HELLO, "prompt": "hi"}
        for name in rng.sample(fields, 3):
            body[name] = rng.choice(values)
        for path in (CHAT, COMPLETIONS):
            response = post(api, path, body)
            assert response.status_code < 500, (body, response.content)
            if response.streaming:
                b"".join(response.streaming_content)
            elif response.status_code != 200:
                error = response.json()["error"]
                assert set(error) == {"message", "type", "param", "code"}


@pytest.mark.django_db
def test_over_the_rate_limit_is_429_with_retry_after(
    api: Client, served: dict[str, Any], settings: Any
) -> None:
    settings.ARBITER_INFERENCE_RATE_LIMIT = "3/minute"
    assert [api.get("/v1/models").status_code for _ in range(3)] == [200] * 3
    response = api.get("/v1/models")
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "rate_limit_exceeded"
    assert 1 <= int(response["Retry-After"]) <= 60
    # Another token has its own budget.
    other = user_create(username="other-caller", password="x" * 20, role=ANNOTATOR)
    token, _ = Token.objects.get_or_create(user=other)
    assert (
        Client(HTTP_AUTHORIZATION=f"Bearer {token.key}").get("/v1/models").status_code
        == 200
    )


@pytest.mark.django_db
def test_a_version_the_engine_cannot_load_is_503_not_500(
    api: Client, served: dict[str, Any]
) -> None:
    """An adapter whose folder has a config but no weights: the engine
    refuses it; the API answers 503 model_unavailable, streamed or not, and
    records nothing."""
    rel = Path("adapters") / "inference-test-broken"
    folder = Path(django_settings.STORAGE_ROOT) / rel
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_text('{"peft_type": "LORA"}')
    broken = adapter_register(
        campaign=served["campaign"],
        base_model=served["base"],
        method="dpo",
        peft_type="lora",
        storage_path=str(rel),
        metrics={},
    )
    for stream in (False, True):
        response = post(
            api,
            CHAT,
            {"model": f"adapter-{broken.pk}", "messages": HELLO, "stream": stream},
        )
        assert response.status_code == 503, response.content
        error = response.json()["error"]
        assert error["code"] == "model_unavailable"
        assert "adapter_model" in error["message"]
    assert not ServedResponse.objects.exists()


@pytest.mark.django_db
def test_an_unreachable_artifact_store_is_503_not_500(
    api: Client, served: dict[str, Any], settings: Any, monkeypatch: Any
) -> None:
    """With object storage down, checking that an adapter's object exists
    fails: the answer is 503 (try again), not a crash."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed once the block ends
    settings.ARBITER_STORAGE = "s3"
    settings.ARBITER_S3_BUCKET = "arbiter"
    settings.ARBITER_S3_ENDPOINT_URL = f"http://127.0.0.1:{port}"
    settings.ARBITER_S3_REGION = "us-east-1"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    stored = adapter_register(
        campaign=served["campaign"],
        base_model=served["base"],
        method="dpo",
        peft_type="lora",
        storage_path="adapters/sha256-" + "0" * 64,
        metrics={},
    )
    response = post(api, CHAT, {"model": f"adapter-{stored.pk}", "messages": HELLO})
    assert response.status_code == 503, response.content
    assert response.json()["error"]["code"] == "model_unavailable"
    assert not ServedResponse.objects.exists()


@pytest.mark.django_db
def test_a_prompt_longer_than_the_context_is_400(api: Client) -> None:
    response = post(api, COMPLETIONS, {"model": "base", "prompt": "the cat . " * 5000})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "context_length_exceeded" and error["param"] == "prompt"


@pytest.mark.django_db
def test_messages_the_chat_template_refuses_are_400(
    api: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chat template that raises (e.g. roles must alternate) is the
    request's problem: 400 naming messages, not a 500."""
    tokenizer = engine_for(served_base()).tokenizer
    monkeypatch.setattr(
        tokenizer,
        "chat_template",
        "{{ raise_exception('Conversation roles must alternate user/assistant') }}",
    )
    response = post(api, CHAT, {"model": "base", "messages": HELLO})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "messages" and "alternate" in error["message"]
