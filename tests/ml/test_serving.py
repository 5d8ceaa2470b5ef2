"""The serving engine: one base, adapters per request, batched and streamed."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from peft import LoraConfig, PeftModel, get_peft_model  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from ml.serving import (  # noqa: E402
    EngineError,
    SamplingParams,
    ServedModel,
    ServingEngine,
    reload_generate,
)
from ml.tiny import build_random_lora, build_tiny_model  # noqa: E402

PROMPTS = [
    "tell me about the cat .",
    "tell me about the river .",
    "tell me about the storm .",
]
GREEDY = SamplingParams(max_tokens=12, temperature=0)


@pytest.fixture(scope="module")
def adapters(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, ServedModel]:
    root = tmp_path_factory.mktemp("serving-adapters")
    return {
        f"adapter-{i}": ServedModel(
            f"adapter-{i}",
            adapter_path=str(build_random_lora(tiny_model_dir, root / f"a{i}", seed=i)),
        )
        for i in range(3)
    }


@pytest.fixture(scope="module")
def engine(tiny_model_dir: Path) -> Iterator[ServingEngine]:
    # A long batch wait so that submits made together surely share a batch.
    serving = ServingEngine(str(tiny_model_dir), max_adapters=4, batch_wait_ms=200)
    yield serving
    serving.close()


BASE = ServedModel("base")


def _plain_generate(
    base_dir: Path, model: ServedModel, prompt: str, max_new_tokens: int
) -> str:
    """What transformers' own greedy ``generate`` answers, loaded fresh."""
    tok = AutoTokenizer.from_pretrained(base_dir)
    lm = AutoModelForCausalLM.from_pretrained(base_dir)
    if model.adapter_path:
        lm = PeftModel.from_pretrained(lm, model.adapter_path)
    lm.eval()
    enc = tok(prompt, return_tensors="pt")
    with torch.inference_mode():
        out = lm.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False)
    return tok.decode(
        out[0, enc["input_ids"].shape[1] :],
        skip_special_tokens=True,
        clean_up_tokenization_spaces=False,
    )


def test_mixed_batch_rows_equal_each_request_alone_and_plain_generate(
    engine: ServingEngine, adapters: dict[str, ServedModel], tiny_model_dir: Path
) -> None:
    """Greedy rows for two adapters and the base in one batch answer exactly
    what each request answers alone, and what plain ``generate`` answers."""
    models = [BASE, adapters["adapter-0"], adapters["adapter-1"]]
    alone = [
        engine.generate(m, p, GREEDY) for m, p in zip(models, PROMPTS, strict=True)
    ]
    batches = engine.counters["batches"]
    streams = [
        engine.submit(m, p, GREEDY) for m, p in zip(models, PROMPTS, strict=True)
    ]
    mixed = [s.result for s in streams]
    assert engine.counters["batches"] == batches + 1  # the three ran together
    assert [c.text for c in mixed] == [c.text for c in alone]
    plain = [
        _plain_generate(tiny_model_dir, m, p, GREEDY.max_tokens)
        for m, p in zip(models, PROMPTS, strict=True)
    ]
    assert [c.text for c in mixed] == plain


def test_adapters_change_the_answer(
    engine: ServingEngine, adapters: dict[str, ServedModel]
) -> None:
    """The same prompt gets a different greedy answer from each version."""
    texts = {
        m.name: engine.generate(m, PROMPTS[0], GREEDY).text
        for m in [BASE, *adapters.values()]
    }
    assert len(set(texts.values())) == len(texts), texts


def test_switching_versions_never_reloads_the_base(
    tiny_model_dir: Path, adapters: dict[str, ServedModel]
) -> None:
    """Three adapters and the base over many requests with room for two
    adapters: one base load, adapters loaded and evicted least recently used."""
    serving = ServingEngine(str(tiny_model_dir), max_adapters=2, batch_wait_ms=0)
    try:
        a0, a1, a2 = adapters.values()
        order = [a0, a1, BASE, a0, a2, a0, BASE, a1, a1, a2] * 2
        for i, model in enumerate(order):
            serving.generate(
                model, PROMPTS[i % 3], SamplingParams(max_tokens=3, temperature=0)
            )
        # LRU of two over that order: 10 loads, of which 8 evict another.
        assert serving.counters["base_loads"] == 1
        assert serving.counters["requests"] == len(order)
        assert serving.counters["adapter_loads"] == 10
        assert serving.counters["adapter_evictions"] == 8
        assert len(serving.adapters) == 2
    finally:
        serving.close()


def test_stream_yields_deltas_that_join_to_the_text(
    engine: ServingEngine, adapters: dict[str, ServedModel]
) -> None:
    """Text arrives token by token; the deltas join to the final text."""
    stream = engine.submit(adapters["adapter-2"], PROMPTS[1], GREEDY)
    deltas = list(stream)
    assert len(deltas) > 3
    assert "".join(deltas) == stream.result.text
    assert stream.result.completion_tokens == GREEDY.max_tokens
    assert stream.result.prompt_tokens == engine.count_tokens(PROMPTS[1])


def test_max_tokens_ends_with_finish_reason_length(engine: ServingEngine) -> None:
    """A row cut at ``max_tokens`` says "length" and generated that many."""
    result = engine.generate(
        BASE, PROMPTS[0], SamplingParams(max_tokens=5, temperature=0)
    )
    assert result.finish_reason == "length"
    assert result.completion_tokens == 5


def test_stop_string_ends_the_row_and_never_reaches_the_stream(
    engine: ServingEngine, adapters: dict[str, ServedModel]
) -> None:
    """A stop string ends the answer before it; no delta contains it."""
    model = adapters["adapter-0"]
    full = engine.generate(model, PROMPTS[2], GREEDY).text
    stop = full[len(full) // 2 : len(full) // 2 + 3]
    assert len(stop.strip()) >= 1, full
    stream = engine.submit(
        model, PROMPTS[2], SamplingParams(max_tokens=12, temperature=0, stop=(stop,))
    )
    deltas = list(stream)
    result = stream.result
    assert result.finish_reason == "stop"
    assert result.text == full[: full.index(stop)]
    assert "".join(deltas) == result.text
    assert result.completion_tokens < GREEDY.max_tokens


def test_same_seed_same_text_even_batched_with_other_rows(
    engine: ServingEngine, adapters: dict[str, ServedModel]
) -> None:
    """Sampling with a seed repeats, alone or in a batch beside other rows."""
    model = adapters["adapter-1"]
    sampled = SamplingParams(max_tokens=12, temperature=1.0, top_p=0.9, seed=7)
    alone = engine.generate(model, PROMPTS[0], sampled).text
    streams = [
        engine.submit(BASE, PROMPTS[1], SamplingParams(max_tokens=6, temperature=1.0)),
        engine.submit(model, PROMPTS[0], sampled),
        engine.submit(adapters["adapter-0"], PROMPTS[2], GREEDY),
    ]
    assert streams[1].result.text == alone
    others = {
        engine.generate(
            model, PROMPTS[0], SamplingParams(max_tokens=12, temperature=1.0, seed=s)
        ).text
        for s in range(4)
    }
    assert len(others) > 1  # sampling does sample


def test_bad_adapter_fails_only_its_request(
    engine: ServingEngine, tmp_path: Path
) -> None:
    """A missing folder or an adapter of another base fails that request with
    EngineError; the engine keeps serving."""
    missing = ServedModel("missing", adapter_path=str(tmp_path / "nowhere"))
    with pytest.raises(EngineError, match="adapter_config.json"):
        engine.generate(missing, PROMPTS[0], GREEDY)

    other_base = build_tiny_model(tmp_path / "wide", hidden_size=32)
    foreign = build_random_lora(other_base, tmp_path / "foreign", seed=5)
    stream = engine.submit(
        ServedModel("foreign", adapter_path=str(foreign)), PROMPTS[0], GREEDY
    )
    with pytest.raises(EngineError, match="does not fit the base"):
        list(stream)
    with pytest.raises(EngineError):
        _ = stream.result

    assert engine.generate(BASE, PROMPTS[0], GREEDY).finish_reason == "length"


def test_concurrent_submits_all_complete_in_shared_batches(
    tiny_model_dir: Path, adapters: dict[str, ServedModel]
) -> None:
    """Eight threads submitting at once all get their answers, in fewer
    batches than requests."""
    serving = ServingEngine(str(tiny_model_dir), batch_wait_ms=50)
    models = [BASE, *adapters.values()]
    results: dict[int, str] = {}
    barrier = threading.Barrier(8)

    def client(i: int) -> None:
        barrier.wait()
        for j in range(3):
            model = models[(i + j) % len(models)]
            results[i * 10 + j] = serving.generate(model, PROMPTS[j], GREEDY).text

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert len(results) == 24
        assert serving.counters["requests"] == 24
        assert serving.counters["batches"] < 24
        assert serving.counters["base_loads"] == 1
        # Batched rows answer what the same request answers alone.
        for i in range(8):
            for j in range(3):
                model = models[(i + j) % len(models)]
                assert (
                    results[i * 10 + j]
                    == serving.generate(model, PROMPTS[j], GREEDY).text
                )
    finally:
        serving.close()


def test_request_joins_a_running_batch(
    engine: ServingEngine, adapters: dict[str, ServedModel]
) -> None:
    """A request arriving mid-decode joins the running batch (continuous
    batching) and still answers what it answers alone."""
    joined = engine.counters["joined"]
    long = engine.submit(BASE, PROMPTS[0], SamplingParams(max_tokens=40, temperature=0))
    deltas = iter(long)
    next(deltas)  # the long row is decoding
    late = engine.submit(adapters["adapter-1"], PROMPTS[2], GREEDY)
    assert (
        late.result.text
        == engine.generate(adapters["adapter-1"], PROMPTS[2], GREEDY).text
    )
    assert engine.counters["joined"] > joined
    list(deltas)
    assert long.result.completion_tokens == 40


def test_cancel_stops_the_row(engine: ServingEngine) -> None:
    """A cancelled request stops decoding at the next token."""
    stream = engine.submit(
        BASE, PROMPTS[0], SamplingParams(max_tokens=200, temperature=0)
    )
    deltas = iter(stream)
    next(deltas)
    stream.cancel()
    list(deltas)
    assert stream.result.finish_reason == "cancelled"
    assert stream.result.completion_tokens < 200


def test_merged_model_answers_like_base_plus_adapter(
    engine: ServingEngine,
    adapters: dict[str, ServedModel],
    tiny_model_dir: Path,
    tmp_path: Path,
) -> None:
    """A merged export is served as its own model, with the adapter's answers."""
    adapter = adapters["adapter-0"]
    merged = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir), adapter.adapter_path
    ).merge_and_unload()
    merged.save_pretrained(tmp_path / "merged")
    served = ServedModel("adapter-0-merged", merged_path=str(tmp_path / "merged"))
    loads = engine.counters["merged_loads"]
    assert (
        engine.generate(served, PROMPTS[1], GREEDY).text
        == engine.generate(adapter, PROMPTS[1], GREEDY).text
    )
    engine.generate(served, PROMPTS[0], GREEDY)
    assert engine.counters["merged_loads"] == loads + 1
    assert engine.counters["base_loads"] == 1


def test_chat_prompt_uses_the_template(engine: ServingEngine) -> None:
    prompt = engine.chat_prompt([{"role": "user", "content": "hello"}])
    assert prompt == "<|user|>hello</s><|assistant|>"
    assert engine.max_context == 512


def test_reload_generate_matches_the_engine(
    engine: ServingEngine, adapters: dict[str, ServedModel], tiny_model_dir: Path
) -> None:
    """The reload-per-request baseline answers what the engine answers."""
    model = adapters["adapter-2"]
    assert (
        reload_generate(str(tiny_model_dir), model, PROMPTS[0], GREEDY).text
        == engine.generate(model, PROMPTS[0], GREEDY).text
    )


def test_a_failing_batch_fails_its_requests_and_the_engine_goes_on(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error inside a decoding step (injected here: no real input makes
    the tiny model's forward fail) fails the requests of that batch with
    EngineError; the scheduler thread lives on and serves the next one."""
    serving = ServingEngine(str(tiny_model_dir), batch_wait_ms=0)
    try:
        real_step = serving._step
        calls = {"n": 0}

        def failing_step() -> None:
            calls["n"] += 1
            if calls["n"] == 2:
                raise RuntimeError("injected fault")
            real_step()

        monkeypatch.setattr(serving, "_step", failing_step)
        with pytest.raises(EngineError, match="injected fault"):
            serving.generate(BASE, PROMPTS[0], GREEDY)
        assert serving.generate(BASE, PROMPTS[0], GREEDY).finish_reason == "length"
        assert serving._thread.is_alive()
    finally:
        serving.close()


def test_prompt_longer_than_the_context_fails_that_request(
    engine: ServingEngine,
) -> None:
    too_long = " cat" * (engine.max_context + 5)
    with pytest.raises(EngineError, match="context"):
        engine.generate(BASE, too_long, GREEDY)
    assert engine.generate(BASE, PROMPTS[0], GREEDY).completion_tokens == 12


def test_submit_after_close_is_refused(tiny_model_dir: Path) -> None:
    serving = ServingEngine(str(tiny_model_dir))
    serving.close()
    with pytest.raises(EngineError, match="closed"):
        serving.submit(BASE, PROMPTS[0], GREEDY)


def test_gpt2_base_serves_an_adapter_like_plain_generate(tmp_path: Path) -> None:
    """Another architecture (GPT-2: Conv1D projections, learned positions)
    batches the base and an adapter and answers like plain ``generate``."""
    base_dir = build_tiny_model(tmp_path / "gpt2", kind="gpt2")
    torch.manual_seed(3)
    peft_model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(base_dir),
        LoraConfig(
            r=4, lora_alpha=32, target_modules=["c_attn"], init_lora_weights=False
        ),
    )
    peft_model.save_pretrained(tmp_path / "gpt2-lora")
    adapter = ServedModel("gpt2-lora", adapter_path=str(tmp_path / "gpt2-lora"))
    serving = ServingEngine(str(base_dir), batch_wait_ms=200)
    try:
        streams = [
            serving.submit(BASE, PROMPTS[0], GREEDY),
            serving.submit(adapter, PROMPTS[1], GREEDY),
        ]
        texts = [s.result.text for s in streams]
        assert serving.counters["batches"] == 1
    finally:
        serving.close()
    assert texts == [
        _plain_generate(base_dir, BASE, PROMPTS[0], GREEDY.max_tokens),
        _plain_generate(base_dir, adapter, PROMPTS[1], GREEDY.max_tokens),
    ]


def test_threads_tokenize_while_the_scheduler_decodes(
    engine: ServingEngine,
) -> None:
    """Request threads count tokens, build chat prompts and submit while the
    scheduler detokenises: the shared fast tokenizer never fails."""
    errors: list[BaseException] = []
    long = engine.submit(BASE, PROMPTS[0], SamplingParams(max_tokens=60, temperature=0))

    def client() -> None:
        try:
            for i in range(50):
                engine.count_tokens(f"tell me about the cat number {i} .")
                engine.chat_prompt([{"role": "user", "content": f"hello {i}"}])
        except BaseException as error:  # noqa: BLE001 - collected for the assert
            errors.append(error)

    threads = [threading.Thread(target=client) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert long.result.completion_tokens == 60


def test_a_failing_prefill_fails_only_the_joining_requests(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error while new rows are prefilled (injected for one served name)
    fails those rows; the batch already decoding finishes untouched."""
    serving = ServingEngine(str(tiny_model_dir), batch_wait_ms=0)
    try:
        real_prefill = serving._prefill

        def prefill(rows: list) -> None:  # type: ignore[type-arg]
            if any(r.request.model.name == "poison" for r in rows):
                raise RuntimeError("injected prefill fault")
            real_prefill(rows)

        monkeypatch.setattr(serving, "_prefill", prefill)
        running = serving.submit(
            BASE, PROMPTS[0], SamplingParams(max_tokens=40, temperature=0)
        )
        deltas = iter(running)
        next(deltas)
        with pytest.raises(EngineError, match="injected prefill fault"):
            serving.generate(ServedModel("poison"), PROMPTS[1], GREEDY)
        list(deltas)
        assert running.result.completion_tokens == 40
        assert (
            running.result.text
            == serving.generate(
                BASE, PROMPTS[0], SamplingParams(max_tokens=40, temperature=0)
            ).text
        )
    finally:
        serving.close()
