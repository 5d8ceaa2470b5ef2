"""Generation throughput: tokens per second of one round on this machine.

Usage::

    ./arbiter bench generation_throughput [--prompts 32] [--max-new-tokens 48]
        [--batch-sizes 8,16,32] [--repeat 2] [--threads 0]

A LoRA adapter (r=16 on the seven Llama projections, random weights, like the
ones the DPO runner writes) over SmolLM2-135M-Instruct answers the same
prompts with ``AdapterGenerator.generate`` — the code path of every
generation job — at each batch size, sampling with the product's default
decoding (temperature 0.7, top-p 0.9). Rounds alternate batch sizes
(``--repeat`` times, best kept) after an untimed warm-up. It prints new
tokens per second (tokens the model generated, up to and including its end
token) per batch size and the ratio to batch size 8, the default before
issue 9.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
ROOT = _HERE.parent
DATA_DIR = ROOT / ".data" / "bench-generation"

WORDS = (
    "cat river robot guitar storm garden teacher train moon bread city forest "
    "music rain bike tea"
).split()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--batch-sizes", default="8,16,32")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="0 = torch's default")
    args = parser.parse_args()
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.path.insert(0, str(ROOT))

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from ml.adapters import LLAMA_LORA
    from ml.generation import AdapterGenerator, DecodingParams
    from ml.smollm2 import ensure_smollm2

    if args.threads:
        torch.set_num_threads(args.threads)
    base = ensure_smollm2(DATA_DIR / "models")
    adapter = DATA_DIR / "adapters" / "throughput-lora"
    if not (adapter / "adapter_model.safetensors").exists():
        torch.manual_seed(0)
        model = get_peft_model(
            AutoModelForCausalLM.from_pretrained(base),
            LoraConfig(
                r=16, lora_alpha=32, target_modules=LLAMA_LORA, init_lora_weights=False
            ),
        )
        model.save_pretrained(adapter)
    prompts = [
        f"Write two sentences about topic number {i}: the {WORDS[i % len(WORDS)]}."
        for i in range(args.prompts)
    ]
    spec = ("throughput", str(adapter))
    generator = AdapterGenerator(str(base))
    generator.generate(
        prompts[:2], adapter=spec, params=DecodingParams(max_new_tokens=4)
    )
    sizes = [int(s) for s in args.batch_sizes.split(",")]
    best: dict[int, float] = {}
    for _ in range(args.repeat):
        for size in sizes:
            params = DecodingParams(
                max_new_tokens=args.max_new_tokens, batch_size=size, seed=3
            )
            start = time.perf_counter()
            out = generator.generate(prompts, adapter=spec, params=params)
            seconds = time.perf_counter() - start
            rate = sum(record["new_tokens"] for _, record in out) / seconds
            best[size] = max(best.get(size, 0.0), rate)
    print(
        f"SmolLM2-135M + LoRA r=16, {args.prompts} prompts x {args.max_new_tokens} "
        f"new tokens, torch threads {torch.get_num_threads()}, best of {args.repeat}"
    )
    reference = best.get(8)
    for size in sizes:
        ratio = f"  {best[size] / reference:.2f}x batch 8" if reference else ""
        print(f"  batch {size:3d}: {best[size]:7.1f} new tokens/s{ratio}")
    default = DecodingParams().batch_size
    if reference and default in best:
        print(
            f"default batch ({default}) vs the old default (8): "
            f"{best[default] / reference:.2f}x (issue 9 target: 3x)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
