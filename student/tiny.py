"""A tiny from-scratch Llama student, built locally: no model hub needed.

The tokenizer is a byte-level BPE trained with ``tokenizers`` on the texts rendered through the
ChatML chat template (so role names and the turn markers are single tokens), with the
end-of-turn token ``<|im_end|>`` as eos and left padding for batched generation. Model and
tokenizer are saved with ``save_pretrained``: they load by path with ``AutoModelForCausalLM``
and ``AutoTokenizer``, the same way a hub model does.

torch, transformers and tokenizers are imported inside :func:`build_tiny_model`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # transformers is imported when the model is built
    from transformers import PreTrainedTokenizerFast

_TURN = "<|im_start|>{{ message['role'] }}\n{{ message['content'] or '' }}<|im_end|>\n"
_GENERATION_PROMPT = "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
_IMPLIED = "{% if not (message['role'] == 'system' and message['content'] == implied) %}"

CHAT_TEMPLATE = "{% for message in messages %}" + _TURN + "{% endfor %}" + _GENERATION_PROMPT


def chat_template(implied_system: str | None = None) -> str:
    """The tiny students' chat template (ChatML). With ``implied_system``, a system message
    with exactly that text is left out: for a student trained from scratch on one task, a
    prompt every example shares tells no two examples apart, yet costs compute. The template
    is saved with the tokenizer, so training, evaluation and every backend that serves the
    student (in-process, vLLM) leave it out alike."""
    if not implied_system:
        return CHAT_TEMPLATE
    literal = json.dumps(implied_system, ensure_ascii=False)  # a Jinja string literal
    return (
        f"{{% set implied = {literal} %}}"
        "{% for message in messages %}"
        + _IMPLIED
        + _TURN
        + "{% endif %}{% endfor %}"
        + _GENERATION_PROMPT
    )


BOS, START, END, PAD = "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"
SPECIAL_TOKENS = [BOS, START, END, PAD]
ROLES = ("system", "user", "assistant")

# Used when no texts are given: enough English, digits and JSON to tokenise anything sensibly.
DEFAULT_CORPUS = (
    "You are a helpful assistant. Answer briefly.",
    "Classify the customer's message. Answer with the intent name only.",
    "Hello, how can I help you today?",
    "my card has not arrived yet, where is it?",
    "I lost my card, please block it",
    "how do I top up my account with a bank transfer",
    "what exchange rate do you use for euros and dollars",
    "card_arrival lost_card top_up exchange_rate refund_request balance",
    'Answer in JSON: {"intent": "card_arrival", "confidence": 0.97, "ok": true}',
    '{"name": "Ada Lovelace", "year": 1843, "tags": ["math", "engine"], "valid": null}',
    "one two three four five six seven eight nine ten",
    "0 1 2 3 4 5 6 7 8 9 10 42 100 2024 3.14",
    "The quick brown fox jumps over the lazy dog.",
    "Summarise the text in one sentence. Translate it into French.",
    "yes no maybe positive negative neutral spam ham",
    "What is the capital of France? Paris is the capital of France.",
)


def rendered_conversations(texts: Iterable[str]) -> Iterator[str]:
    """Each text as it appears to the model: in every role, between the turn markers."""
    for text in texts:
        yield text
        for role in ROLES:
            yield f"{START}{role}\n{text}{END}\n"
    yield f"{START}assistant\n"


def build_tiny_model(
    path: str | Path,
    texts: Iterable[str] | None = None,
    *,
    hidden: int = 128,
    layers: int = 2,
    heads: int = 4,
    vocab_size: int = 2048,
    max_positions: int = 256,
    seed: int = 0,
    implied_system: str | None = None,
) -> Path:
    """Build, save and return ``path``: an untrained Llama and its tokenizer.

    ``texts`` (default: a small built-in corpus) are what the tokenizer learns its merges
    from; ``vocab_size`` is an upper bound (a small corpus yields fewer tokens).
    ``implied_system``: the system prompt its chat template leaves out (:func:`chat_template`).
    """
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    corpus = list(texts) if texts is not None else list(DEFAULT_CORPUS)
    tokenizer = _train_tokenizer(corpus, vocab_size, max_positions, chat_template(implied_system))
    tokenizer.save_pretrained(path)
    end_id = tokenizer.convert_tokens_to_ids(END)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        intermediate_size=4 * hidden,
        max_position_embeddings=max_positions,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=end_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=end_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model.save_pretrained(path)
    return path


def _train_tokenizer(
    corpus: list[str], vocab_size: int, max_positions: int, template: str
) -> PreTrainedTokenizerFast:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(rendered_conversations(corpus), trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token=BOS,
        eos_token=END,
        pad_token=PAD,
        padding_side="left",
        model_max_length=max_positions,
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = template
    return tokenizer
