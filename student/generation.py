"""Batched generation with token log-probabilities, shared by serving and offline evaluation.

:func:`load_generator` loads a causal LM (hub id or local path, a PEFT adapter merged on top
when given) and its tokenizer; :class:`Generator` answers a batch of
:class:`~understudy.student.base.StudentRequest` in one ``model.generate`` call:

* prompts are rendered with the tokenizer's chat template (plain ``prompt`` requests are used
  as they are) and left-padded;
* every step's token is picked here, from the model's own distribution: the most likely
  token (greedy, ``temperature == 0``) or one sampled with the request's temperature, top-p
  and seed; its log-probability and the ``top_logprobs`` most likely alternatives are kept, so
  what the router sees is the unmodified model distribution;
* each row stops at an end-of-turn token (not part of the answer), at its own ``max_tokens``
  (``finish_reason="length"``) or at one of its stop strings (the text ends before it).

Token texts add up to the answer's text (multi-byte characters split across tokens are given
to the token that completes them). torch and transformers are imported when a model is loaded.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from understudy.student.base import StudentAnswer, StudentError, StudentRequest, TokenAlternative
from understudy.student.decoding import Picker, Row, Steps, Stopper

if TYPE_CHECKING:  # torch and transformers are imported when a model is loaded
    import torch
    from transformers import GenerationConfig, PreTrainedTokenizerBase

END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>")


def resolve_device(device: str) -> str:
    """``auto`` is a GPU when one is present, else the CPU; ``cuda`` without a GPU is an error."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise StudentError(f"device {device!r} was asked for but no GPU is available")
    return device


def load_generator(base: str, adapter_path: str | None = None, device: str = "auto") -> Generator:
    """Load ``base`` (hub id or directory), with the PEFT adapter at ``adapter_path`` merged in.

    Every failure (no such directory, unreadable weights, no GPU) is a :class:`StudentError`.
    """
    device = resolve_device(device)
    _check_local(base, "model")
    if adapter_path is not None:
        _check_local(adapter_path, "adapter")
    try:
        return _load(base, adapter_path, device)
    except StudentError:
        raise
    except Exception as exc:  # any loading failure means "cannot serve it"
        where = base if adapter_path is None else f"{base} + adapter {adapter_path}"
        raise StudentError(f"could not load the student {where}: {exc}") from exc


def _check_local(name: str, what: str) -> None:
    path = Path(name).expanduser()
    if not path.exists() and name.startswith(("/", ".", "~")):
        raise StudentError(f"no {what} at {name!r}: the directory does not exist")


def _load(base: str, adapter_path: str | None, device: str) -> Generator:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    has_own_tokenizer = adapter_path and (Path(adapter_path) / "tokenizer_config.json").exists()
    tokenizer = AutoTokenizer.from_pretrained(adapter_path if has_own_tokenizer else base)
    dtype = torch.float32 if device == "cpu" else "auto"
    # Any: transformers types ``PreTrainedModel.to`` as a plain wrapped function, not a method.
    model: Any = AutoModelForCausalLM.from_pretrained(base, dtype=dtype)
    if adapter_path:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter_path).merge_and_unload()
    return Generator(model.to(device).eval(), tokenizer, device)


class Generator:
    """A loaded causal LM and its tokenizer, answering batches of requests."""

    def __init__(self, model: Any, tokenizer: PreTrainedTokenizerBase, device: str) -> None:
        """``model``: a causal LM (a ``PreTrainedModel`` with ``generate``), on ``device``."""
        from transformers import GenerationConfig

        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self.stop_ids = _stop_ids(model, tokenizer)
        pad = tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else self.stop_ids[0] if self.stop_ids else 0
        text_config = model.config.get_text_config()
        self.max_positions: int | None = getattr(text_config, "max_position_embeddings", None)
        # The picker chooses every token from the raw distribution: no processor of the
        # model's own generation config (repetition penalty, sampling defaults) may run first.
        model.generation_config = GenerationConfig(
            eos_token_id=self.stop_ids, pad_token_id=self.pad_id
        )
        self._piece_cache: dict[int, str] = {}

    # -- prompts --------------------------------------------------------------------------

    def render(self, request: StudentRequest) -> str:
        """The text the model continues: the chat template with the assistant turn opened."""
        if request.messages is None:
            return request.prompt or ""
        if not getattr(self.tokenizer, "chat_template", None):
            raise StudentError("the student's tokenizer has no chat template")
        try:
            text = self.tokenizer.apply_chat_template(
                request.messages, add_generation_prompt=True, tokenize=False
            )
            return cast(str, text)  # tokenize=False: the rendered text
        except Exception as exc:  # a template error is the request's problem
            raise StudentError(f"the chat template failed on these messages: {exc}") from exc

    def encode(self, request: StudentRequest) -> list[int]:
        """Prompt token ids; a prompt the model cannot continue is a :class:`StudentError`.

        A prompt too long for the student's context keeps its end (as in training): room is
        left for ``max_tokens`` of answer, or half the context, whichever is less."""
        chat = request.messages is not None
        ids = list(self.tokenizer(self.render(request), add_special_tokens=not chat)["input_ids"])
        if not ids:
            raise StudentError("the prompt is empty")
        if self.max_positions is not None:
            answer = min(max(1, request.max_tokens), self.max_positions // 2)
            room = self.max_positions - answer
            if len(ids) > room:
                ids = ids[-room:]
        return ids

    # -- generation -----------------------------------------------------------------------

    def generate(self, requests: Sequence[StudentRequest]) -> list[StudentAnswer]:
        """Answer ``requests`` in one batch (every prompt must encode)."""
        return self.generate_encoded(requests, [self.encode(r) for r in requests])

    def generate_each(
        self, requests: Sequence[StudentRequest]
    ) -> list[StudentAnswer | StudentError]:
        """Answer ``requests`` in one batch; a request that cannot be answered gets its error
        in its place (a prompt that does not encode fails alone)."""
        results: list[StudentAnswer | StudentError | None] = [None] * len(requests)
        ready: list[int] = []
        prompts: list[list[int]] = []
        for i, request in enumerate(requests):
            try:
                prompts.append(self.encode(request))
                ready.append(i)
            except StudentError as exc:
                results[i] = exc
            except Exception as exc:  # noqa: BLE001 - one bad prompt fails only its request
                results[i] = StudentError(f"could not encode the prompt: {exc}")
        if ready:
            try:
                answers: list[Any] = self.generate_encoded([requests[i] for i in ready], prompts)
            except Exception as exc:  # noqa: BLE001 - reported to every request of the batch
                error = exc if isinstance(exc, StudentError) else StudentError(repr(exc))
                answers = [error] * len(ready)
            for i, answer in zip(ready, answers, strict=True):
                results[i] = answer
        return [r for r in results if r is not None]

    def generate_encoded(
        self, requests: Sequence[StudentRequest], prompts: Sequence[list[int]]
    ) -> list[StudentAnswer]:
        """Answer ``requests`` whose prompts :meth:`encode` gave as ``prompts``."""
        if not requests:
            return []
        import torch

        started = time.perf_counter()
        rows = [self._row(req, ids) for req, ids in zip(requests, prompts, strict=True)]
        input_ids, attention_mask = self._pad([row.prompt_ids for row in rows])
        steps = Steps()
        with torch.inference_mode():
            self.model.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                generation_config=self._config(max(row.limit for row in rows)),
                logits_processor=[Picker(rows, steps)],
                stopping_criteria=[Stopper(rows, input_ids.shape[1], self.tokenizer)],
            )
        answers = [self._answer(i, row, steps) for i, row in enumerate(rows)]
        latency_ms = (time.perf_counter() - started) * 1000
        for answer in answers:
            answer.latency_ms = latency_ms
        return answers

    def _row(self, request: StudentRequest, prompt_ids: list[int]) -> Row:
        import torch

        limit = max(1, request.max_tokens)
        if self.max_positions is not None:
            limit = max(1, min(limit, self.max_positions - len(prompt_ids)))
        row = Row(request, prompt_ids, limit)
        if request.temperature > 0:
            seed = request.seed if request.seed is not None else random.getrandbits(63)
            row.generator = torch.Generator().manual_seed(seed)
        return row

    def _pad(self, prompts: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        width = max(len(ids) for ids in prompts)
        ids = [[self.pad_id] * (width - len(p)) + p for p in prompts]
        mask = [[0] * (width - len(p)) + [1] * len(p) for p in prompts]
        return (
            torch.tensor(ids, dtype=torch.long, device=self.device),
            torch.tensor(mask, dtype=torch.long, device=self.device),
        )

    def _config(self, max_new_tokens: int) -> GenerationConfig:
        from transformers import GenerationConfig

        return GenerationConfig(
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=self.stop_ids,
            pad_token_id=self.pad_id,
        )

    # -- answers --------------------------------------------------------------------------

    def _answer(self, i: int, row: Row, steps: Steps) -> StudentAnswer:
        request = row.request
        ids = [int(step[i]) for step in steps.ids]
        stop = set(self.stop_ids)
        # Steps past a row's own end were computed for the other rows: they are not its own.
        end = next((j for j, t in enumerate(ids) if t in stop and j < row.limit), None)
        ended = end is not None
        n = end if end is not None else min(len(ids), row.limit)
        finish = "stop" if ended else "length"
        ids = ids[:n]
        pieces = self._pieces(ids)
        text = "".join(pieces)
        cut = _first_stop(text, request.stop)
        if cut is not None:
            finish = "stop"
            text = text[:cut]
            pieces = _clip(pieces, cut)
            n = len(pieces)
            ids = ids[:n]
        k = max(0, request.top_logprobs)
        top = [self._alternatives(i, j, k, steps) if k else [] for j in range(n)]
        return StudentAnswer(
            text=text,
            token_ids=ids,
            tokens=pieces,
            logprobs=[float(steps.logprobs[j][i]) for j in range(n)],
            top_logprobs=top,
            finish_reason=finish,
            prompt_tokens=len(row.prompt_ids),
            completion_tokens=n + (1 if ended and cut is None else 0),
            latency_ms=0.0,
        )

    def _pieces(self, ids: list[int]) -> list[str]:
        """Each token's share of the decoded text; the pieces add up to the whole text."""
        pieces: list[str] = []
        done = 0
        for j in range(len(ids)):
            text = self._decode(ids[: j + 1])
            if text.endswith("\ufffd") and j + 1 < len(ids):
                pieces.append("")  # an incomplete character: the next token completes it
                continue
            pieces.append(text[done:])
            done = len(text)
        return pieces

    def _alternatives(self, i: int, j: int, k: int, steps: Steps) -> list[TokenAlternative]:
        ids = steps.top_ids[j][i][:k].tolist()
        values = steps.top_logprobs[j][i][:k].tolist()
        pairs = zip(ids, values, strict=True)
        return [TokenAlternative(self._piece(t), float(lp)) for t, lp in pairs]

    def _piece(self, token_id: int) -> str:
        piece = self._piece_cache.get(token_id)
        if piece is None:
            piece = self._piece_cache[token_id] = self._decode([token_id])
        return piece

    def _decode(self, ids: list[int]) -> str:
        text = self.tokenizer.decode(
            ids, skip_special_tokens=True, clean_up_tokenization_spaces=False
        )
        return cast(str, text)  # one sequence of ids: one text


def _first_stop(text: str, stops: Sequence[str]) -> int | None:
    found = [text.find(s) for s in stops if s]
    found = [at for at in found if at >= 0]
    return min(found) if found else None


def _clip(pieces: list[str], cut: int) -> list[str]:
    """The pieces covering ``text[:cut]``, the last one shortened to end at ``cut``."""
    out: list[str] = []
    start = 0
    for piece in pieces:
        if start >= cut:
            break
        out.append(piece[: cut - start])
        start += len(piece)
    return out


def _stop_ids(model: Any, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Token ids that end the assistant's turn: the model's eos, the tokenizer's, and the
    usual end-of-turn markers the vocabulary has."""
    ids: set[int] = set()
    configured = getattr(model.generation_config, "eos_token_id", None)
    if isinstance(configured, int):
        ids.add(configured)
    elif configured:
        ids.update(int(t) for t in configured)
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    vocab = tokenizer.get_vocab()
    ids.update(vocab[token] for token in END_OF_TURN_TOKENS if token in vocab)
    return sorted(ids)
