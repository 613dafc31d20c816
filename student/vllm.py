"""The ``vllm`` student: a vLLM OpenAI server reached over HTTP.

One base model is served by ``vllm serve BASE --enable-lora``; each student version is a LoRA
adapter added and removed at run time through ``/v1/load_lora_adapter`` and
``/v1/unload_lora_adapter`` (the server needs ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``). A
request names the adapter as its ``model``; a student without an adapter names the base.

Token ids come from ``return_token_ids`` (vLLM 0.10.2 and later); a server started with
``--return-tokens-as-token-ids`` spells tokens ``token_id:N`` and the ids are read from those;
otherwise ``token_ids`` is empty. Top alternatives are sorted by log-probability and cut to the
``k`` asked for: vLLM puts the sampled token first, and adds it even when it is not in the top k.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from understudy.student.base import (
    StudentAnswer,
    StudentBackend,
    StudentError,
    StudentModel,
    StudentRequest,
    TokenAlternative,
)

TOKEN_ID_PREFIX = "token_id:"
RUNTIME_LORA_HINT = (
    "the server does not offer runtime LoRA loading: start it with "
    "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True and --enable-lora"
)


class VLLMBackend(StudentBackend):
    """Students served by a vLLM OpenAI server.

    ``base_url`` is the server's address, with or without the trailing ``/v1``.
    ``served_base`` is the name the server serves the base model under
    (``--served-model-name``); by default a student's ``base`` is used.
    """

    name = "vllm"

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        timeout_s: float = 30.0,
        served_base: str | None = None,
    ) -> None:
        root = base_url.rstrip("/")
        self.root = root[: -len("/v1")] if root.endswith("/v1") else root
        self.api_key = api_key
        self.timeout_s = timeout_s
        self.served_base = served_base
        self._client: httpx.AsyncClient | None = None
        self._loaded: dict[str, str] = {}  # adapter name -> path, loaded now
        self._bound: dict[str, str] = {}  # adapter name -> path, ever loaded by us
        self._locks: dict[str, asyncio.Lock] = {}

    # -- lifecycle ----------------------------------------------------------------------

    async def load(self, model: StudentModel) -> None:
        """Add ``model``'s adapter to the server (a no-op once loaded).

        A name is bound to the first path loaded under it, for good: loading it with another
        path raises :class:`StudentError`, as does a server that holds it with another path.
        Without an adapter, checks that the server serves the base model.
        """
        if model.adapter_path is None:
            await self._check_base(model)
            return
        await self._add(model, model.adapter_path, again=False)

    async def _add(self, model: StudentModel, path: str, again: bool) -> None:
        async with self._lock(model.name):
            bound = self._bound.get(model.name)
            if bound is not None and not _same_path(bound, path):
                raise StudentError(
                    f"adapter name {model.name!r} is bound to {bound!r}; "
                    f"refusing to point it at {path!r} (names are never reused)"
                )
            if model.name in self._loaded and not again:
                return
            try:
                await self._post_load(model.name, path)
            except StudentError:
                self._loaded.pop(model.name, None)
                raise
            self._loaded[model.name] = path
            self._bound[model.name] = path

    async def _post_load(self, name: str, path: str) -> None:
        body = {"lora_name": name, "lora_path": path}
        response = await self._send("POST", "/v1/load_lora_adapter", body)
        if response.status_code == 200:
            return
        if _already_loaded(response):
            await self._check_server_binding(name, path)
        elif _route_missing(response):
            raise StudentError(f"vLLM at {self.root}: {RUNTIME_LORA_HINT}")
        else:
            raise _error(response, f"loading adapter {name!r} from {path!r}")

    async def unload(self, model: StudentModel) -> None:
        """Remove ``model``'s adapter from the server; one it does not hold is no error."""
        if model.adapter_path is None:
            return
        async with self._lock(model.name):
            body = {"lora_name": model.name}
            response = await self._send("POST", "/v1/unload_lora_adapter", body)
            if response.status_code == 200 or (
                response.status_code == 404 and not _route_missing(response)
            ):
                self._loaded.pop(model.name, None)
                return
            if _route_missing(response):
                raise StudentError(f"vLLM at {self.root}: {RUNTIME_LORA_HINT}")
            raise _error(response, f"unloading adapter {model.name!r}")

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # -- generation ---------------------------------------------------------------------

    async def generate(self, request: StudentRequest) -> StudentAnswer:
        """One greedy (or sampled) answer with per-token log-probabilities and top-k."""
        chat = _is_chat(request)
        path = "/v1/chat/completions" if chat else "/v1/completions"
        started = time.perf_counter()
        body = self._body(request, chat)
        response = await self._send("POST", path, body)
        adapter = request.model.adapter_path
        if _model_missing(response) and adapter and request.model.name in self._loaded:
            # The server lost an adapter we had loaded (a restart drops runtime-loaded ones):
            # add it back once. One we unloaded stays unloaded.
            await self._add(request.model, adapter, again=True)
            response = await self._send("POST", path, body)
        if response.status_code != 200:
            raise _error(response, f"generating with {body['model']!r}")
        try:
            data = response.json()
        except ValueError as exc:
            raise StudentError(f"vLLM at {self.root} sent a body that is not JSON") from exc
        latency_ms = (time.perf_counter() - started) * 1000
        return _parse(data, chat, request.top_logprobs, latency_ms)

    def serving_name(self, model: StudentModel) -> str:
        """The ``model`` a request for this student names: its adapter, else the base."""
        if model.adapter_path is not None:
            return model.name
        return self.served_base or model.base

    def _body(self, request: StudentRequest, chat: bool) -> dict[str, Any]:
        k = max(0, request.top_logprobs)
        body: dict[str, Any] = {
            "model": self.serving_name(request.model),
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p,
            "return_token_ids": True,
        }
        if chat:
            body.update(messages=request.messages, logprobs=True, top_logprobs=k)
        else:
            body.update(prompt=request.prompt, logprobs=k)
        if request.stop:
            body["stop"] = list(request.stop)
        if request.seed is not None:
            body["seed"] = request.seed
        return body

    # -- plumbing -----------------------------------------------------------------------

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
            self._client = httpx.AsyncClient(
                base_url=self.root, headers=headers, timeout=httpx.Timeout(self.timeout_s)
            )
        return self._client

    async def _send(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> httpx.Response:
        """One HTTP exchange; transport failures and timeouts become :class:`StudentError`."""
        extra: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
        try:
            return await self._http().request(method, path, json=body, **extra)
        except httpx.TimeoutException as exc:
            limit = self.timeout_s if timeout is None else timeout
            raise StudentError(f"vLLM at {self.root} timed out after {limit:g}s on {path}") from exc
        except httpx.HTTPError as exc:
            raise StudentError(
                f"connection to vLLM at {self.root} failed on {path}: {exc!r}"
            ) from exc

    async def _served_models(self) -> list[dict[str, Any]]:
        response = await self._send("GET", "/v1/models")
        if response.status_code != 200:
            raise _error(response, "listing models")
        try:
            return [card for card in response.json()["data"] if isinstance(card, dict)]
        except (ValueError, KeyError, TypeError) as exc:
            raise StudentError(f"vLLM at {self.root} sent an unreadable model list") from exc

    async def _check_base(self, model: StudentModel) -> None:
        wanted = self.serving_name(model)
        served = [str(card.get("id")) for card in await self._served_models()]
        if wanted not in served:
            raise StudentError(
                f"vLLM at {self.root} does not serve {wanted!r} (it serves {served}); "
                "set the served base name if it was started with --served-model-name"
            )

    async def _check_server_binding(self, name: str, path: str) -> None:
        """The server already holds ``name``: accept it only if it holds the same path."""
        for card in await self._served_models():
            root = card.get("root")
            if card.get("id") == name and root and not _same_path(str(root), path):
                raise StudentError(
                    f"vLLM at {self.root} already holds adapter {name!r} from {root!r}, "
                    f"not {path!r}; a name is never pointed at other weights"
                )


# -- responses ---------------------------------------------------------------------------


def _is_chat(request: StudentRequest) -> bool:
    if (request.messages is None) == (request.prompt is None):
        raise ValueError("a StudentRequest needs exactly one of messages or prompt")
    return request.messages is not None


def _parse(data: Any, chat: bool, k: int, latency_ms: float) -> StudentAnswer:
    try:
        choice = data["choices"][0]
        if chat:
            text = choice["message"].get("content") or ""
            tokens, logprobs, top = _chat_logprobs(choice.get("logprobs"), k)
        else:
            text = choice["text"] or ""
            tokens, logprobs, top = _completion_logprobs(choice.get("logprobs"), k)
        usage = data.get("usage") or {}
        prompt_tokens = int(usage.get("prompt_tokens") or 0)
        completion_tokens = usage.get("completion_tokens")
        finish = choice.get("finish_reason")
        token_ids = _token_ids(choice.get("token_ids"), tokens)
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        raise StudentError(f"vLLM sent an answer of an unexpected shape: {exc!r}") from exc
    if finish in ("abort", "error"):
        raise StudentError(f"vLLM ended the generation with finish_reason={finish!r}")
    if text and not tokens:
        raise StudentError("vLLM answered without the token logprobs that were asked for")
    return StudentAnswer(
        text=text,
        token_ids=token_ids,
        tokens=tokens,
        logprobs=logprobs,
        top_logprobs=top,
        finish_reason="length" if finish == "length" else "stop",
        prompt_tokens=prompt_tokens,
        completion_tokens=len(tokens) if completion_tokens is None else int(completion_tokens),
        latency_ms=latency_ms,
    )


def _chat_logprobs(
    logprobs: Any, k: int
) -> tuple[list[str], list[float], list[list[TokenAlternative]]]:
    """``{"content": [{"token", "logprob", "bytes", "top_logprobs": [...]}, ...]}``."""
    content = (logprobs or {}).get("content") or []
    tokens = [str(entry["token"]) for entry in content]
    values = [float(entry.get("logprob", -9999.0)) for entry in content]
    top = [
        _best(((str(alt["token"]), alt["logprob"]) for alt in entry.get("top_logprobs") or []), k)
        for entry in content
    ]
    return tokens, values, top


def _completion_logprobs(
    logprobs: Any, k: int
) -> tuple[list[str], list[float], list[list[TokenAlternative]]]:
    """``{"tokens", "token_logprobs", "top_logprobs": [{token: logprob} | None], ...}``."""
    logprobs = logprobs or {}
    tokens = [str(token) for token in logprobs.get("tokens") or []]
    values = [-9999.0 if v is None else float(v) for v in logprobs.get("token_logprobs") or []]
    steps = list(logprobs.get("top_logprobs") or [])
    steps += [None] * (len(tokens) - len(steps))
    top = [_best((step or {}).items(), k) for step in steps[: len(tokens)]]
    if len(values) != len(tokens):
        raise ValueError("tokens and token_logprobs differ in length")
    return tokens, values, top


def _best(pairs: Any, k: int) -> list[TokenAlternative]:
    alternatives = [TokenAlternative(token, float(lp)) for token, lp in pairs]
    alternatives.sort(key=lambda alt: alt.logprob, reverse=True)
    return alternatives[: max(0, k)]


def _token_ids(raw: Any, tokens: list[str]) -> list[int]:
    if isinstance(raw, list):
        return [int(token_id) for token_id in raw]
    if tokens and all(token.startswith(TOKEN_ID_PREFIX) for token in tokens):
        return [int(token[len(TOKEN_ID_PREFIX) :]) for token in tokens]
    return []


# -- errors ------------------------------------------------------------------------------


def _body_json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _message(response: httpx.Response) -> str:
    """vLLM's ``{"error": {"message"}}``, its older ``{"message"}``, or FastAPI's ``detail``."""
    body = _body_json(response)
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        for key in ("message", "detail", "error"):
            if body.get(key):
                return str(body[key])
    return response.text[:300] or response.reason_phrase


def _error(response: httpx.Response, doing: str) -> StudentError:
    return StudentError(f"vLLM answered {response.status_code} while {doing}: {_message(response)}")


def _already_loaded(response: httpx.Response) -> bool:
    return response.status_code == 400 and "already been loaded" in _message(response)


def _route_missing(response: httpx.Response) -> bool:
    """The path itself is unknown (FastAPI's ``{"detail": ...}``, no vLLM error object)."""
    body = _body_json(response)
    has_error = isinstance(body, dict) and ("error" in body or "object" in body)
    return response.status_code in (404, 405) and not has_error


def _model_missing(response: httpx.Response) -> bool:
    return response.status_code == 404 and "does not exist" in _message(response)


def _same_path(a: str, b: str) -> bool:
    return a.rstrip("/") == b.rstrip("/")
