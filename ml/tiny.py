"""Tiny random-weight causal LMs with a locally trained tokenizer, for tests.

``build_tiny_model(path)`` writes an ordinary Hugging Face folder
(``config.json``, ``model.safetensors``, ``tokenizer.json``, a chat template)
that every runner, ``AutoModelForCausalLM.from_pretrained`` and
``AutoModelForSequenceClassification.from_pretrained`` load offline. Nothing
is downloaded. The same ``seed`` gives byte-identical weights and tokenizer.

The tokenizer is a byte-level BPE trained on a small built-in English corpus
(plus any ``extra_text``), so it encodes any string. Its special tokens are
``<pad>``, ``<s>`` (bos), ``</s>`` (eos, also ends every chat turn),
``<unk>`` and the role markers ``<|system|>``, ``<|user|>``,
``<|assistant|>``. The pad token is distinct from eos on purpose: PPO and
sequence-classification heads treat pad positions as padding.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    GenerationConfig,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)

logger = logging.getLogger(__name__)

KINDS = ("llama", "gpt2")

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")

# Each turn is "<|role|>content</s>"; the generation prompt is "<|assistant|>".
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + '</s>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)

_WORDS = (
    "the a an and or but if then so of to in on at by for with from about as is are "
    "was were be been it this that these those I you he she we they me him her us "
    "them my your his our their what which who when where why how yes no not all "
    "some any one two three four five many few more most other such only own same "
    "than too very can will just should now tell me about please answer question "
    "Q A User Assistant help thanks hello world good bad kindly rudely gently "
    "quickly slowly happily sadly small big large little old new heavy light cat "
    "dog bird fish sun moon star cloud rain snow wind river ocean mountain tree "
    "flower music story book word sentence letter code python model train learn "
    "reward prefer chosen rejected follows opens closes runs walks sings reads "
    "writes sees finds makes takes gives says goes comes red blue green yellow "
    "black white day night morning evening today tomorrow water fire earth air "
    "house city road car ship friend teacher student child people time year way"
).split()


def _corpus(extra_text: Iterable[str]) -> list[str]:
    lines = [" ".join(_WORDS[i : i + 12]) for i in range(0, len(_WORDS), 12)]
    lines += [
        f"Q: tell me about the {a} and the {b} . A:"
        for a, b in zip(_WORDS, _WORDS[7:], strict=False)
    ]
    lines += ["0 1 2 3 4 5 6 7 8 9 . , ! ? : ; ' \" ( ) - + = / * # @ & %"]
    lines += list(extra_text)
    return lines


def build_tokenizer(
    *, extra_text: Iterable[str] = (), vocab_size: int = 600
) -> PreTrainedTokenizerFast:
    """Train a small byte-level BPE tokenizer and wrap it for transformers."""
    specials = [PAD, BOS, EOS, UNK, *ROLE_TOKENS]
    tok = Tokenizer(models.BPE(unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(extra_text), trainer=trainer)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        additional_special_tokens=list(ROLE_TOKENS),
    )
    wrapped.chat_template = CHAT_TEMPLATE
    return wrapped


def _model(
    kind: str, tok: PreTrainedTokenizerFast, hidden_size: int, num_layers: int
) -> PreTrainedModel:
    ids = {
        "pad_token_id": tok.pad_token_id,
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
    }
    if kind == "llama":
        llama = LlamaConfig(
            vocab_size=len(tok),
            hidden_size=hidden_size,
            intermediate_size=hidden_size * 2,
            num_hidden_layers=num_layers,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=512,
            tie_word_embeddings=False,
            **ids,
        )
        return LlamaForCausalLM(llama)
    gpt2 = GPT2Config(
        vocab_size=len(tok),
        n_embd=hidden_size,
        n_layer=num_layers,
        n_head=4,
        n_positions=512,
        **ids,
    )
    return GPT2LMHeadModel(gpt2)


def build_tiny_model(
    path: str | Path,
    *,
    kind: str = "llama",
    seed: int = 0,
    hidden_size: int = 64,
    num_layers: int = 2,
    extra_text: Iterable[str] = (),
) -> Path:
    """Write a tiny random-weight causal LM and its tokenizer to ``path``.

    ``kind`` is ``"llama"`` (q/k/v/o/gate/up/down projections) or ``"gpt2"``
    (``c_attn``/``c_proj``/``c_fc``). Returns ``path`` as a ``Path``.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if hidden_size % 4:
        raise ValueError("hidden_size must be a multiple of 4")
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(extra_text=extra_text)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _model(kind, tok, hidden_size, num_layers)
    model.generation_config = GenerationConfig(
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    model.save_pretrained(out)
    tok.save_pretrained(out)
    logger.info(
        "Built tiny %s model at %s (%d parameters)",
        kind,
        out,
        sum(p.numel() for p in model.parameters()),
    )
    return out


def build_random_lora(
    base_dir: str | Path,
    out: str | Path,
    *,
    seed: int,
    r: int = 4,
    target_modules: tuple[str, ...] = ("q_proj", "v_proj"),
) -> Path:
    """A LoRA adapter over ``base_dir`` with non-zero random weights
    (``init_lora_weights=False``), so it visibly changes the model's answers;
    saved in plain PEFT format under ``out``. For tests of serving and
    generation, where a trained adapter is not the point."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_dir)
    peft_model = get_peft_model(
        model,
        LoraConfig(
            r=r,
            lora_alpha=32,
            target_modules=list(target_modules),
            init_lora_weights=False,
        ),
    )
    peft_model.save_pretrained(out)
    return Path(out)
