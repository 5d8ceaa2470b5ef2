"""The generation service: one base per process, adapters switched."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")


from ml.generation import AdapterGenerator, DecodingParams, get_generator  # noqa: E402
from ml.tiny import build_random_lora  # noqa: E402

PROMPTS = [
    "tell me about the cat .",
    "tell me about the river .",
    "tell me about the storm .",
]
GREEDY = DecodingParams(max_new_tokens=8, do_sample=False, batch_size=2)


@pytest.fixture(scope="module")
def adapters(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("adapters")
    return {
        f"a{i}": build_random_lora(tiny_model_dir, root / f"a{i}", seed=i)
        for i in range(3)
    }


def test_two_adapters_on_one_base_match_loading_each_alone(
    tiny_model_dir: Path, adapters: dict[str, Path]
) -> None:
    shared = AdapterGenerator(str(tiny_model_dir))
    together = {
        key: [
            t
            for t, _ in shared.generate(
                PROMPTS, adapter=(key, str(path)), params=GREEDY
            )
        ]
        for key, path in list(adapters.items())[:2]
    }
    for key, path in list(adapters.items())[:2]:
        alone = AdapterGenerator(str(tiny_model_dir))
        assert [
            t
            for t, _ in alone.generate(PROMPTS, adapter=(key, str(path)), params=GREEDY)
        ] == together[key]
    assert together["a0"] != together["a1"]


def test_switching_adapters_does_not_reload_the_base(
    tiny_model_dir: Path, adapters: dict[str, Path]
) -> None:
    generator = AdapterGenerator(str(tiny_model_dir), max_adapters=2)
    loads = AdapterGenerator.base_loads
    for _ in range(2):
        for key, path in adapters.items():
            generator.generate(PROMPTS[:1], adapter=(key, str(path)), params=GREEDY)
    assert AdapterGenerator.base_loads == loads
    assert list(generator.adapters) == ["a1", "a2"]  # least recently used evicted
    assert set(generator.model.peft_config) == {"a1", "a2"}


def test_base_alone_is_version_zero_even_with_adapters_loaded(
    tiny_model_dir: Path, adapters: dict[str, Path]
) -> None:
    fresh = AdapterGenerator(str(tiny_model_dir))
    plain = fresh.generate(PROMPTS, adapter=None, params=GREEDY)
    fresh.generate(PROMPTS, adapter=("a0", str(adapters["a0"])), params=GREEDY)
    again = fresh.generate(PROMPTS, adapter=None, params=GREEDY)
    assert [t for t, _ in plain] == [t for t, _ in again]
    record = again[0][1]
    assert (
        record["do_sample"] is False
        and record["max_new_tokens"] == 8
        and "batch_seed" in record
    )


def test_sampling_is_reproducible_from_the_recorded_seed(tiny_model_dir: Path) -> None:
    params = DecodingParams(
        max_new_tokens=8, temperature=1.0, top_p=1.0, seed=7, batch_size=4
    )
    first = get_generator(str(tiny_model_dir)).generate(
        PROMPTS, adapter=None, params=params
    )
    second = get_generator(str(tiny_model_dir)).generate(
        PROMPTS, adapter=None, params=params
    )
    assert first == second


def test_records_say_whether_an_output_was_cut_and_how_long_it_is(
    tiny_model_dir: Path,
) -> None:
    """A one-token budget cuts every output; a generous one lets outputs end."""
    generator = get_generator(str(tiny_model_dir))
    cut = generator.generate(
        PROMPTS,
        adapter=None,
        params=DecodingParams(max_new_tokens=1, do_sample=False, batch_size=3),
    )
    assert all(not r["finished"] and r["new_tokens"] == 1 for _, r in cut)
    long = generator.generate(
        PROMPTS,
        adapter=None,
        params=DecodingParams(max_new_tokens=64, do_sample=False, batch_size=3),
    )
    assert all(1 <= r["new_tokens"] <= 64 for _, r in long)
    # Stopping before the budget means the end token was generated.
    assert all(r["finished"] for _, r in long if r["new_tokens"] < 64)


def test_the_base_finds_its_own_outputs_likelier_than_another_versions(
    tiny_model_dir: Path, adapters: dict[str, Path]
) -> None:
    """Drift proxy: the base's NLL of a random adapter's greedy outputs is
    higher than of its own greedy outputs, and matches a direct computation."""
    generator = AdapterGenerator(str(tiny_model_dir))
    own = [t for t, _ in generator.generate(PROMPTS, adapter=None, params=GREEDY)]
    other = [
        t
        for t, _ in generator.generate(
            PROMPTS, adapter=("a0", str(adapters["a0"])), params=GREEDY
        )
    ]
    own_nll = generator.negative_log_likelihood(PROMPTS, own)
    other_nll = generator.negative_log_likelihood(PROMPTS, other)
    assert sum(other_nll) > sum(own_nll)
    under_adapter = generator.negative_log_likelihood(
        PROMPTS, other, adapter=("a0", str(adapters["a0"]))
    )
    assert sum(under_adapter) < sum(other_nll)


def test_an_adapter_read_for_likelihoods_leaves_the_next_load_working(
    tiny_model_dir: Path, adapters: dict[str, Path]
) -> None:
    """Likelihoods under an adapter (test metrics) load it outside inference
    mode: loading the next adapter afterwards (PEFT sets requires_grad on
    every adapter's weights) still works, for generation and likelihoods."""
    generator = AdapterGenerator(str(tiny_model_dir))
    first, second = (("a0", str(adapters["a0"])), ("a1", str(adapters["a1"])))
    under_first = generator.negative_log_likelihood(
        PROMPTS, ["the cat ."] * 3, adapter=first, per_token=False
    )
    texts = generator.generate(PROMPTS, adapter=second, params=GREEDY)
    assert len(texts) == 3
    under_second = generator.negative_log_likelihood(
        PROMPTS, ["the cat ."] * 3, adapter=second, per_token=False
    )
    assert under_first != under_second
    per_token = generator.negative_log_likelihood(
        PROMPTS, ["the cat ."] * 3, adapter=second
    )
    assert all(t > p for t, p in zip(under_second, per_token, strict=True))
