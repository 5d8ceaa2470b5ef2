"""The inference process as the demo runs it: ``gunicorn inference.wsgi``
(the command ``core.launch`` starts) against the test database, called over
HTTP with the ``openai`` client, streaming and not."""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from core.launch import product_processes
from models_hub.models import ServedResponse

openai = pytest.importorskip("openai")

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def inference_server(
    celery_worker_env: dict[str, str], tmp_path: Path
) -> Iterator[str]:
    port = _free_port()
    env = {**celery_worker_env, "ARBITER_INFERENCE_PORT": str(port)}
    # As under `./arbiter demo`: the environment names the web's settings and
    # the command itself switches the process to inference.settings.
    env["DJANGO_SETTINGS_MODULE"] = "config.settings"
    saved = os.environ.get("ARBITER_INFERENCE_PORT")
    os.environ["ARBITER_INFERENCE_PORT"] = str(port)
    try:
        command = dict(product_processes(host="127.0.0.1", port=0, data_dir=tmp_path))[
            "inference"
        ]
    finally:
        if saved is None:
            os.environ.pop("ARBITER_INFERENCE_PORT")
        else:
            os.environ["ARBITER_INFERENCE_PORT"] = saved
    assert f"127.0.0.1:{port}" in command
    log = tmp_path / "inference.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            command,
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:  # noqa: S310 - our own server
                if response.status == 200:
                    break
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"gunicorn inference.wsgi did not start:\n{log.read_text()}")
        time.sleep(0.3)
    yield url
    process.terminate()
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.mark.django_db(transaction=True)
def test_the_openai_client_calls_the_running_process(
    served: dict[str, Any], inference_server: str
) -> None:
    client = openai.OpenAI(
        base_url=f"{inference_server}/v1", api_key=served["token"], max_retries=0
    )
    adapter = served["adapters"][2]
    alias = f"campaign-{served['campaign'].pk}/champion"

    names = {model.id for model in client.models.list()}
    assert {"base", f"adapter-{adapter.pk}", alias} <= names

    chat = client.chat.completions.create(
        model=alias,
        messages=[{"role": "user", "content": "tell me about the song ."}],
        max_tokens=6,
        temperature=0,
        user="app-user-1",
    )
    assert chat.model == f"adapter-{served['champion'].pk}"
    assert chat.choices[0].message.role == "assistant"
    assert (
        chat.usage.total_tokens
        == chat.usage.prompt_tokens + chat.usage.completion_tokens
    )

    pieces = []
    finish = None
    stream = client.chat.completions.create(
        model=f"adapter-{adapter.pk}",
        messages=[{"role": "user", "content": "tell me about the song ."}],
        max_tokens=6,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    stream_id = None
    for chunk in stream:
        stream_id = chunk.id
        assert chunk.model == f"adapter-{adapter.pk}"
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    assert finish in ("stop", "length")

    text = client.completions.create(
        model="base", prompt="the friend", max_tokens=4, stream=False
    )
    assert text.model == f"base-{served['base'].pk}"
    streamed_text = "".join(
        c.choices[0].text
        for c in client.completions.create(
            model="base", prompt="the friend", max_tokens=4, stream=True
        )
        if c.choices
    )
    assert isinstance(streamed_text, str)

    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(
            model="adapter-999999", messages=[{"role": "user", "content": "x"}]
        )
    assert missing.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(
            model="base",
            messages=[{"role": "user", "content": "x"}],
            temperature=3,
        )
    assert bad.value.body["param"] == "temperature"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(
            base_url=f"{inference_server}/v1", api_key="wrong", max_retries=0
        ).models.list()

    rows = {r.public_id: r for r in ServedResponse.objects.all()}
    assert rows[chat.id].served_model == chat.model
    assert rows[chat.id].campaign == served["campaign"]
    assert rows[chat.id].end_user == "app-user-1"
    assert rows[stream_id].text == "".join(pieces)
    assert rows[text.id].served_model == text.model
    assert len(rows) == 4
