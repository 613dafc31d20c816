"""The tiny-model factory: a real Llama and tokenizer that load by path like a hub model."""

from __future__ import annotations

import pytest

from understudy.student.tiny import build_tiny_model

TEXTS = [
    "refund_request: I want my money back for order 1234",
    "card_arrival: my new card has not arrived yet",
    "refund_request: please refund the duplicate charge",
]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    path = build_tiny_model(
        tmp_path_factory.mktemp("tiny") / "m", TEXTS, hidden=64, layers=1, vocab_size=400, seed=3
    )
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return path, AutoTokenizer.from_pretrained(path), AutoModelForCausalLM.from_pretrained(path)


def test_it_loads_by_path_with_the_asked_shape(built):
    _, tokenizer, model = built

    assert model.config.model_type == "llama"
    assert (model.config.hidden_size, model.config.num_hidden_layers) == (64, 1)
    assert model.config.max_position_embeddings == 256 == tokenizer.model_max_length
    assert model.config.vocab_size == len(tokenizer) <= 400
    assert model.get_input_embeddings().weight.shape == (len(tokenizer), 64)


def test_the_chat_template_is_chatml_with_end_of_turn_as_eos(built):
    _, tokenizer, model = built
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]

    rendered = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    assert rendered == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert tokenizer.eos_token_id == end == model.config.eos_token_id
    assert model.generation_config.eos_token_id == end
    assert tokenizer.padding_side == "left"
    assert tokenizer.pad_token_id is not None and tokenizer.pad_token_id != end


def test_the_tokenizer_learnt_the_texts_and_the_conversation_markup(built):
    _, tokenizer, _ = built
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": "x"}], add_generation_prompt=True, tokenize=False
    )
    tokens = tokenizer.convert_ids_to_tokens(tokenizer(rendered)["input_ids"])

    # Role names and turn markers are whole tokens, not spelt out letter by letter.
    assert tokens.count("<|im_start|>") == 2 and "<|im_end|>" in tokens
    assert "user" in tokens and "assistant" in tokens
    assert len(tokenizer("refund_request")["input_ids"]) <= 3
    # Byte-level: anything encodes and decodes back, even text the tokenizer never saw.
    odd = "Zoë paid 42€ — ok?"
    assert tokenizer.decode(tokenizer(odd)["input_ids"]) == odd


def test_the_seed_fixes_the_weights(tmp_path, built):
    from safetensors.torch import load_file

    path, _, _ = built
    again = build_tiny_model(tmp_path / "a", TEXTS, hidden=64, layers=1, vocab_size=400, seed=3)
    other = build_tiny_model(tmp_path / "b", TEXTS, hidden=64, layers=1, vocab_size=400, seed=4)

    first = load_file(path / "model.safetensors")
    same = load_file(again / "model.safetensors")
    different = load_file(other / "model.safetensors")
    assert all((first[k] == same[k]).all() for k in first)
    assert any((first[k] != different[k]).any() for k in first)


def test_without_texts_it_uses_a_built_in_corpus(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)

    assert model.config.hidden_size == 128 and model.config.num_hidden_layers == 2
    assert 300 < len(tokenizer) <= 2048
    assert len(tokenizer(" one two three")["input_ids"]) == 3


@pytest.mark.parametrize(
    "prompt",
    ["Be brief.", 'Say "yes" or \\no\\.\nThen {{ stop }} %} — Zoë 😀'],
    ids=["plain", "quotes-braces-unicode"],
)
def test_the_template_can_leave_out_one_exact_system_prompt(tmp_path, prompt):
    from transformers import AutoTokenizer

    path = build_tiny_model(tmp_path / "m", TEXTS, hidden=32, layers=1, implied_system=prompt)
    tokenizer = AutoTokenizer.from_pretrained(path)
    user = [{"role": "user", "content": "hi"}]

    def render(messages):
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    assert render([{"role": "system", "content": prompt}, *user]) == render(user)
    assert render([{"role": "system", "content": prompt + " "}, *user]) == (
        f"<|im_start|>system\n{prompt} <|im_end|>\n" + render(user)
    )
