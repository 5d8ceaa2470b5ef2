"""Serving throughput and latency: many adapters on one base, per request.

Usage::

    ./arbiter bench serving [--quick] [--clients 1,4,16] [--requests 32]
        [--max-tokens 32] [--adapters 4] [--reload-requests 4] [--threads 0]

One ``ml.serving.ServingEngine`` over SmolLM2-135M-Instruct (converted once
from the bundled GGUF, never downloaded) serves 4 LoRA adapters (r=16 on the
seven Llama projections, **random non-zero weights**:
``init_lora_weights=False`` with B scaled by 0.05 so that the answers stay
readable; the cost of a LoRA does not depend on its values). For each concurrency level, that many client threads
send ``--requests`` chat requests in all, each client going round-robin over
the adapters (so every batch mixes adapters), greedy, ``--max-tokens`` new
tokens at most, each waiting for its answer before the next (a closed loop).
Streams are read token by token: time to first token is when the first text
delta arrives.

Printed per level: completion tokens/s and requests/s over the level's wall
time, p50/p95 request latency and time to first token, and the engine's
batching (batches started, rows that joined a running batch, mean rows per
decoding step). Then the reload-per-request baseline: ``reload_generate``
(a fresh base and adapter per request, the same decoding code) for a few
requests, one at a time, half of them before the engine runs and half after
(the machine's load may change during the run; the load average is printed
beside each level), and the ratios engine/reload.

The machine may be shared: numbers are wall-clock on whatever cores are free.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

# Run as a script, sys.path[0] is benchmarks/: keep only the project root,
# so no sibling script can shadow a module of the same name.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
ROOT = _HERE.parent
DATA_DIR = ROOT / ".data" / "bench-serving"

QUESTIONS = [
    "Give one tip for learning to cook.",
    "What is a good name for a grey cat?",
    "Describe the sea in one sentence.",
    "Why do leaves change colour in autumn?",
    "Suggest a short title for a story about a robot.",
    "What should I pack for a rainy day?",
    "Explain what a river delta is.",
    "Name three fruits that are red.",
]


@dataclass
class Level:
    clients: int
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    first_token: list[float] = field(default_factory=list)
    tokens: int = 0
    counters: dict[str, int] = field(default_factory=dict)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def make_adapters(base: Path, root: Path, count: int) -> list[Path]:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from ml.adapters import LLAMA_LORA

    paths = []
    for i in range(count):
        out = root / f"lora-{i}"
        paths.append(out)
        if (out / "adapter_model.safetensors").exists():
            continue
        torch.manual_seed(100 + i)
        model = get_peft_model(
            AutoModelForCausalLM.from_pretrained(base),
            LoraConfig(
                r=16, lora_alpha=32, target_modules=LLAMA_LORA, init_lora_weights=False
            ),
        )
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "lora_B" in name:
                    param.mul_(0.05)
        model.save_pretrained(out)
    return paths


def run_level(engine, models, prompts, clients: int, total: int, params) -> Level:  # type: ignore[no-untyped-def]
    level = Level(clients=clients)
    before = dict(engine.counters)
    lock = threading.Lock()
    per_client = [total // clients + (i < total % clients) for i in range(clients)]
    barrier = threading.Barrier(clients + 1)

    def client(i: int) -> None:
        barrier.wait()
        for k in range(per_client[i]):
            model = models[(i + k) % len(models)]
            prompt = prompts[(i * 7 + k) % len(prompts)]
            start = time.perf_counter()
            first = None
            stream = engine.submit(model, prompt, params)
            for _ in stream:
                if first is None:
                    first = time.perf_counter() - start
            done = time.perf_counter() - start
            with lock:
                level.latencies.append(done)
                level.first_token.append(first if first is not None else done)
                level.tokens += stream.result.completion_tokens

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    level.seconds = time.perf_counter() - start
    level.counters = {k: engine.counters[k] - before.get(k, 0) for k in engine.counters}
    return level


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a short run")
    parser.add_argument("--clients", default="1,4,16")
    parser.add_argument("--requests", type=int, default=32, help="per level")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--adapters", type=int, default=4)
    parser.add_argument("--reload-requests", type=int, default=4)
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=0, help="0 = torch's default")
    args = parser.parse_args()
    if args.quick:
        args.requests = min(args.requests, 8)
        args.max_tokens = min(args.max_tokens, 16)
        args.reload_requests = min(args.reload_requests, 2)
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.path.insert(0, str(ROOT))

    import torch

    from ml.serving import SamplingParams, ServedModel, ServingEngine
    from ml.smollm2 import ensure_smollm2

    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    base = ensure_smollm2(DATA_DIR / "models")
    print(f"base model ready in {time.perf_counter() - start:.1f}s: {base}")
    adapter_dirs = make_adapters(base, DATA_DIR / "adapters", args.adapters)
    models = [
        ServedModel(f"bench-lora-{i}", adapter_path=str(path))
        for i, path in enumerate(adapter_dirs)
    ]
    params = SamplingParams(max_tokens=args.max_tokens, temperature=0)

    # The reload baseline runs half before and half after the engine, so a
    # change in the machine's load during the run shows up on both sides.
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    prompts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True
        )
        for q in QUESTIONS
    ]
    first = args.reload_requests // 2
    reload_before = run_reload(base, models, prompts, params, first, offset=0)

    start = time.perf_counter()
    engine = ServingEngine(
        str(base), max_adapters=max(8, args.adapters), max_batch=args.max_batch
    )
    print(f"engine ready in {time.perf_counter() - start:.1f}s")
    assert prompts[0] == engine.chat_prompt([{"role": "user", "content": QUESTIONS[0]}])
    for model in models:  # warm-up: adapters attached, first-call costs paid
        engine.generate(model, prompts[0], SamplingParams(max_tokens=2, temperature=0))
    sample = engine.generate(models[0], prompts[1], params).text
    print(f"sample answer ({models[0].name}): {sample[:80]!r}")

    print(
        f"\nSmolLM2-135M-Instruct + {args.adapters} LoRA adapters (r=16), "
        f"{args.requests} requests per level, max_tokens {args.max_tokens}, greedy, "
        f"max_batch {args.max_batch}, torch threads {torch.get_num_threads()}, "
        f"device {engine.device}, {os.cpu_count()} CPUs"
    )
    print(
        f"{'clients':>7} {'tok/s':>7} {'req/s':>6} {'lat p50':>8} {'lat p95':>8} "
        f"{'ttft p50':>8} {'ttft p95':>8} {'batches':>7} {'joined':>6} "
        f"{'rows/step':>9} {'load':>5}"
    )
    levels = []
    for clients in (int(c) for c in args.clients.split(",")):
        level = run_level(engine, models, prompts, clients, args.requests, params)
        levels.append(level)
        steps = level.counters["decode_steps"] or 1
        print(
            f"{clients:>7} {level.tokens / level.seconds:>7.1f} "
            f"{len(level.latencies) / level.seconds:>6.2f} "
            f"{percentile(level.latencies, 0.5):>7.2f}s "
            f"{percentile(level.latencies, 0.95):>7.2f}s "
            f"{percentile(level.first_token, 0.5):>7.2f}s "
            f"{percentile(level.first_token, 0.95):>7.2f}s "
            f"{level.counters['batches']:>7} {level.counters['joined']:>6} "
            f"{level.counters['decode_rows'] / steps:>9.1f} {os.getloadavg()[0]:>5.1f}"
        )
    counters = engine.counters
    print(
        f"engine counters: base_loads {counters['base_loads']}, adapter_loads "
        f"{counters['adapter_loads']}, adapter_evictions {counters['adapter_evictions']}"
    )
    engine.close()

    reload_after = run_reload(
        base, models, prompts, params, args.reload_requests - first, offset=first
    )
    latencies = reload_before[1] + reload_after[1]
    tokens = reload_before[2] + reload_after[2]
    seconds = reload_before[3] + reload_after[3]
    reload_p50 = statistics.median(latencies)
    # One stalled reload (tens of seconds on a busy shared machine) would
    # decide a rate over the sum; the ratios use the median request's rate.
    reload_rate = statistics.median(
        [
            t / s
            for t, s in zip(reload_before[4] + reload_after[4], latencies, strict=True)
        ]
    )
    print(
        f"\nreload per request (reload_generate: fresh base + adapter each), "
        f"{len(latencies)} requests one at a time, {first} before the engine and "
        f"{len(latencies) - first} after:"
    )
    for label, part in (("before", reload_before), ("after", reload_after)):
        if part[1]:
            print(
                f"  {label:>6}: {part[0]:6.1f} tok/s, latencies "
                + ", ".join(f"{x:.2f}s" for x in part[1])
            )
    print(
        f"  {'all':>6}: {tokens / seconds:6.1f} tok/s ({reload_rate:.1f} for the "
        f"median request), {len(latencies) / seconds:.2f} req/s, "
        f"p50 {reload_p50:.2f}s, p95 {percentile(latencies, 0.95):.2f}s, "
        f"load {os.getloadavg()[0]:.1f}"
    )
    print(
        "\nengine vs reload: throughput ratio (engine tokens/s over the level / "
        "reload tokens/s of the median request) and p50 latency ratio "
        "(reload/engine; above 1 the engine answers sooner)"
    )
    for level in levels:
        rate = level.tokens / level.seconds
        p50 = percentile(level.latencies, 0.5)
        print(
            f"  {level.clients:>2} clients: throughput {rate / reload_rate:5.1f}x, "
            f"latency {reload_p50 / p50:5.2f}x (engine p50 {p50:.2f}s, "
            f"reload p50 {reload_p50:.2f}s)"
        )
    return 0


def run_reload(base, models, prompts, params, count: int, *, offset: int):  # type: ignore[no-untyped-def]
    """``count`` requests through ``reload_generate``, one at a time:
    (tokens/s, latencies, tokens, seconds, tokens per request)."""
    from ml.serving import reload_generate

    latencies: list[float] = []
    counts: list[int] = []
    start = time.perf_counter()
    for k in range(offset, offset + count):
        t0 = time.perf_counter()
        result = reload_generate(
            str(base), models[k % len(models)], prompts[k % len(prompts)], params
        )
        latencies.append(time.perf_counter() - t0)
        counts.append(result.completion_tokens)
    seconds = time.perf_counter() - start
    tokens = sum(counts)
    return (tokens / seconds if seconds else 0.0), latencies, tokens, seconds, counts


if __name__ == "__main__":
    sys.exit(main())
