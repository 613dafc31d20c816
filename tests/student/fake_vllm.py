"""A stand-in vLLM OpenAI server that answers from a table (or echoes), over real HTTP.

It speaks the endpoints the ``vllm`` student uses, with vLLM's shapes and rules:

* ``/v1/chat/completions`` and ``/v1/completions`` answer deterministically, with ``logprobs``
  laid out as vLLM lays them out (chat: ``content[].top_logprobs`` holds the first k entries
  of the step's dict; completions: ``top_logprobs[]`` dicts hold the first k + 1; in both the
  sampled token comes first), ``token_ids`` when ``return_token_ids`` is set and
  ``token_id:N`` tokens with ``return_tokens_as_token_ids`` (per request or server-wide);
* a ``model`` that is neither the base nor a loaded adapter gets vLLM's 404;
* ``/v1/load_lora_adapter`` exists only with ``runtime_lora`` (vLLM's
  ``VLLM_ALLOW_RUNTIME_LORA_UPDATING``), needs a directory holding ``adapter_config.json``, refuses
  a name already loaded (400) and a rank above ``max_lora_rank``; unloading an unknown name is
  a 404;
* ``/health`` answers 200 (503 when ``healthy`` is false); with ``api_key`` set, ``/v1/*`` asks
  for ``Authorization: Bearer <key>`` and answers ``{"error": "Unauthorized"}`` otherwise.

Each step's sampled token has logprob ``-0.01 * (i + 1)`` unless the table gives ``logprobs``
(greedy: it is the most likely); alternative ``j`` (``"<piece>#j"``) has that logprob minus
``j``. With ``sample_outside_top_k`` the sampled token ranks below k alternatives instead, as a
sampled (temperature > 0) token can.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
import zlib
from pathlib import Path
from typing import Any

from tests.asgi_server import ThreadedServer

BASE_MODEL = "Qwen/Qwen3-0.6B"
VOCAB = 32000


class _Reply(Exception):
    def __init__(self, status: int, body: Any) -> None:
        self.status = status
        self.body = body


class _Drop(Exception):
    """Close the connection without a response."""


def vllm_error(message: str, err_type: str, status: int, param: str | None = None) -> _Reply:
    """vLLM's ``ErrorResponse``: ``{"error": {"message", "type", "param", "code": status}}``."""
    error = {"message": message, "type": err_type, "param": param, "code": status}
    return _Reply(status, {"error": error})


def pieces(text: str) -> list[str]:
    """Word pieces with their leading spaces; they add back up to ``text``."""
    return re.findall(r"\s*\S+|\s+$", text)


def token_id(piece: str) -> int:
    return zlib.crc32(piece.encode()) % VOCAB


class FakeVLLM:
    def __init__(
        self,
        table: dict[str, Any] | None = None,
        base_model: str = BASE_MODEL,
        *,
        api_key: str | None = None,
        runtime_lora: bool = True,
        max_lora_rank: int = 16,
        max_logprobs: int = 20,
        return_tokens_as_token_ids: bool = False,
        supports_return_token_ids: bool = True,
    ) -> None:
        self.table = dict(table or {})
        self.base_model = base_model
        self.api_key = api_key
        self.runtime_lora = runtime_lora
        self.max_lora_rank = max_lora_rank
        self.max_logprobs = max_logprobs
        self.return_tokens_as_token_ids = return_tokens_as_token_ids
        self.supports_return_token_ids = supports_return_token_ids
        self.adapters: dict[str, str] = {}  # lora_name -> lora_path
        self.requests: list[dict[str, Any]] = []
        self.sent: list[dict[str, Any]] = []  # generation bodies answered with 200
        self.healthy = True
        self.delay_s = 0.0  # before each generation
        self.load_delay_s = 0.0  # before each adapter load
        self.fail_next: list[int | str] = []
        self.sample_outside_top_k = False
        self.port = 0
        self._runner: ThreadedServer | None = None

    # -- running ------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def start(self, port: int = 0) -> str:
        self._runner = ThreadedServer(self.app)
        self.port = self._runner.start(port)
        return self.base_url

    def stop(self) -> None:
        if self._runner is not None:
            self._runner.stop()

    def restart_engine(self) -> None:
        """What a vLLM restart does to runtime-loaded adapters: they are gone."""
        self.adapters.clear()

    def paths(self, path: str) -> list[dict[str, Any]]:
        """The JSON bodies received on ``path``, oldest first."""
        return [r["json"] for r in self.requests if r["path"] == path]

    # -- ASGI ---------------------------------------------------------------------------

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        raw = b""
        while True:
            message = await receive()
            raw += message.get("body", b"")
            if not message.get("more_body"):
                break
        try:
            status, body = 200, await self._route(scope, raw)
        except _Reply as reply:
            status, body = reply.status, reply.body
        except _Drop:
            # Promise a body, send part of it, and end: the server closes the connection.
            headers = [(b"content-type", b"application/json"), (b"content-length", b"100")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": b"{", "more_body": True})
            return
        if isinstance(body, str):
            payload, kind = body.encode(), b"text/plain; charset=utf-8"
        else:
            payload, kind = json.dumps(body).encode(), b"application/json"
        headers = [(b"content-type", kind)]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    async def _route(self, scope: dict[str, Any], raw: bytes) -> Any:
        path, method = scope["path"], scope["method"]
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            raise vllm_error("The body is not valid JSON.", "BadRequestError", 400) from None
        self.requests.append({"method": method, "path": path, "headers": headers, "json": body})
        if path == "/health":
            if not self.healthy:
                raise _Reply(503, "")
            return ""
        authorized = headers.get("authorization") == f"Bearer {self.api_key}"
        if self.api_key and path.startswith("/v1") and not authorized:
            raise _Reply(401, {"error": "Unauthorized"})
        routes = {
            ("GET", "/v1/models"): self._models,
            ("POST", "/v1/chat/completions"): self._chat,
            ("POST", "/v1/completions"): self._completion,
        }
        if self.runtime_lora:
            routes[("POST", "/v1/load_lora_adapter")] = self._load
            routes[("POST", "/v1/unload_lora_adapter")] = self._unload
        handler = routes.get((method, path))
        if handler is None:
            if any(p == path for _, p in routes):
                raise _Reply(405, {"detail": "Method Not Allowed"})
            raise _Reply(404, {"detail": "Not Found"})
        if not isinstance(body, dict) and method == "POST":
            raise vllm_error("Expected a JSON object body.", "BadRequestError", 400)
        return await handler(body or {})

    # -- models and adapters ------------------------------------------------------------

    async def _models(self, _: dict[str, Any]) -> dict[str, Any]:
        created = int(time.time())
        cards = [_card(self.base_model, created, root=self.base_model, max_model_len=4096)]
        for name, path in self.adapters.items():
            cards.append(_card(name, created, root=path, parent=self.base_model))
        return {"object": "list", "data": cards}

    async def _load(self, body: dict[str, Any]) -> str:
        if self.load_delay_s:
            await asyncio.sleep(self.load_delay_s)
        name, path = body.get("lora_name"), body.get("lora_path")
        if not isinstance(name, str) or not isinstance(path, str):
            missing = "lora_name" if not isinstance(name, str) else "lora_path"
            raise vllm_error(f"Field required: {missing}", "BadRequestError", 400)
        if not name or not path:
            message = "Both 'lora_name' and 'lora_path' must be provided."
            raise vllm_error(message, "InvalidUserInput", 400)
        if name in self.adapters and not body.get("load_inplace"):
            message = (
                f"The lora adapter '{name}' has already been loaded. If you want to load "
                "the adapter in place, set 'load_inplace' to True."
            )
            raise vllm_error(message, "InvalidUserInput", 400)
        config = Path(path) / "adapter_config.json"
        if not config.is_file():
            message = f"Loading lora {name} failed: No adapter found for {path}"
            raise vllm_error(message, "NotFoundError", 404)
        rank = int(json.loads(config.read_text()).get("r", 8))
        if rank > self.max_lora_rank:
            message = f"LoRA rank {rank} is greater than max_lora_rank {self.max_lora_rank}."
            raise vllm_error(message, "InternalServerError", 500)
        self.adapters[name] = path
        return f"Success: LoRA adapter '{name}' added successfully."

    async def _unload(self, body: dict[str, Any]) -> str:
        name = body.get("lora_name")
        if not name:
            message = "'lora_name' needs to be provided to unload a LoRA adapter."
            raise vllm_error(message, "InvalidUserInput", 400)
        if name not in self.adapters:
            raise vllm_error(f"The lora adapter '{name}' cannot be found.", "NotFoundError", 404)
        del self.adapters[name]
        return f"Success: LoRA adapter '{name}' removed successfully."

    # -- generation ---------------------------------------------------------------------

    async def _before_generation(self, body: dict[str, Any]) -> str:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.fail_next:
            failure = self.fail_next.pop(0)
            if failure == "drop":
                raise _Drop
            raise vllm_error("Internal server error", "InternalServerError", int(failure))
        if body.get("stream"):
            raise vllm_error("This fake server does not stream.", "BadRequestError", 400)
        model = body.get("model") or self.base_model
        if model != self.base_model and model not in self.adapters:
            message = f"The model `{model}` does not exist."
            raise vllm_error(message, "NotFoundError", 404, param="model")
        return model

    def _check_logprobs(self, requested: int | None) -> None:
        if requested is not None and requested > self.max_logprobs:
            message = (
                f"Requested sample logprobs of {requested}, which is greater than max "
                f"allowed: {self.max_logprobs}"
            )
            raise vllm_error(message, "BadRequestError", 400, param="logprobs")

    async def _chat(self, body: dict[str, Any]) -> dict[str, Any]:
        model = await self._before_generation(body)
        top = body.get("top_logprobs")
        if top and not body.get("logprobs"):
            message = "when using `top_logprobs`, `logprobs` must be set to true."
            raise vllm_error(message, "BadRequestError", 400, param="top_logprobs")
        k = int(top or 0) if body.get("logprobs") else None
        self._check_logprobs(k)
        messages = body.get("messages") or []
        users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
        key = _content(users[-1]) if users else ""
        prompt_len = sum(len(pieces(_content(m))) + 4 for m in messages if isinstance(m, dict))
        out = self._generate(key, body, k)
        logprobs = None
        if k is not None:
            content = []
            for step in out["steps"]:
                entry = _chat_logprob(step["sampled"], step["sampled_lp"])
                entry["top_logprobs"] = [_chat_logprob(t, lp) for t, lp in step["dict"][:k]]
                content.append(entry)
            logprobs = {"content": content}
        message = {
            "role": "assistant",
            "content": out["text"],
            "refusal": None,
            "annotations": None,
            "audio": None,
            "function_call": None,
            "tool_calls": [],
            "reasoning": None,
        }
        choice = {
            "index": 0,
            "message": message,
            "logprobs": logprobs,
            "finish_reason": out["finish_reason"],
            "stop_reason": out["stop_reason"],
            "token_ids": out["token_ids"],
        }
        response = {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [choice],
            "service_tier": None,
            "system_fingerprint": None,
            "usage": _usage(prompt_len, len(out["steps"])),
            "prompt_logprobs": None,
            "prompt_token_ids": self._ids(key, body),
            "kv_transfer_params": None,
        }
        self.sent.append(response)
        return response

    async def _completion(self, body: dict[str, Any]) -> dict[str, Any]:
        model = await self._before_generation(body)
        k = body.get("logprobs")
        self._check_logprobs(k)
        prompt = body.get("prompt")
        if not isinstance(prompt, str) or not prompt:
            message = "Either prompt or prompt_embeds must be provided and non-empty."
            raise vllm_error(message, "BadRequestError", 400)
        out = self._generate(prompt, body, k)
        logprobs = None
        if k is not None:
            offsets, position = [], 0
            for step in out["steps"]:
                offsets.append(position)
                position += len(step["sampled"])
            logprobs = {
                "text_offset": offsets,
                "token_logprobs": [step["sampled_lp"] for step in out["steps"]],
                "tokens": [step["sampled"] for step in out["steps"]],
                "top_logprobs": [dict(step["dict"][: k + 1]) for step in out["steps"]],
            }
        choice = {
            "index": 0,
            "text": out["text"],
            "logprobs": logprobs,
            "finish_reason": out["finish_reason"],
            "stop_reason": out["stop_reason"],
            "token_ids": out["token_ids"],
            "prompt_logprobs": None,
            "prompt_token_ids": self._ids(prompt, body),
        }
        response = {
            "id": f"cmpl-{uuid.uuid4().hex}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": model,
            "choices": [choice],
            "service_tier": None,
            "system_fingerprint": None,
            "usage": _usage(len(pieces(prompt)), len(out["steps"])),
            "kv_transfer_params": None,
        }
        self.sent.append(response)
        return response

    def _generate(self, key: str, body: dict[str, Any], k: int | None) -> dict[str, Any]:
        """Text, finish and per-step logprob dicts (sampled token first, as vLLM orders them)."""
        entry = self.table.get(key, f"echo: {key}")
        text = entry["text"] if isinstance(entry, dict) else str(entry)
        fixed = entry.get("logprobs") if isinstance(entry, dict) else None
        finish, stop_reason = "stop", None
        stops = body.get("stop") or []
        for stop in [stops] if isinstance(stops, str) else stops:
            if stop in text:
                text, stop_reason = text[: text.index(stop)], stop
        parts = pieces(text)
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        if limit is not None and len(parts) > limit:
            parts, finish, stop_reason = parts[:limit], "length", None
            text = "".join(parts)
        as_ids = bool(body.get("return_tokens_as_token_ids") or self.return_tokens_as_token_ids)

        def name(piece: str) -> str:
            return f"token_id:{token_id(piece)}" if as_ids else piece

        steps = []
        for i, part in enumerate(parts):
            best = float(fixed[i]) if fixed else round(-0.01 * (i + 1), 6)
            alternatives = [(name(f"{part}#{j}"), best - j) for j in range(1, (k or 0) + 1)]
            sampled_lp = best
            if self.sample_outside_top_k and alternatives:
                sampled_lp = alternatives[-1][1] - 1.0
            sampled = (name(part), sampled_lp)
            top_k = sorted([sampled, *alternatives], key=lambda t: -t[1])[: k or 0]
            # vLLM's per-step dict: the sampled token first, then the top k, without repeats.
            ordered = [sampled] + [t for t in top_k if t[0] != sampled[0]]
            steps.append({"sampled": sampled[0], "sampled_lp": sampled_lp, "dict": ordered})
        return {
            "text": text,
            "steps": steps,
            "finish_reason": finish,
            "stop_reason": stop_reason,
            "token_ids": self._ids(text, body),
        }

    def _ids(self, text: str, body: dict[str, Any]) -> list[int] | None:
        """``token_ids`` / ``prompt_token_ids``: only when asked and this version knows them."""
        if body.get("return_token_ids") and self.supports_return_token_ids:
            return [token_id(piece) for piece in pieces(text)]
        return None


def _content(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content if isinstance(content, str) else ""


def _chat_logprob(token: str, logprob: float) -> dict[str, Any]:
    return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8"))}


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "completion_tokens": completion_tokens,
        "prompt_tokens_details": None,
    }


def _card(name: str, created: int, **fields: Any) -> dict[str, Any]:
    card = {
        "id": name,
        "object": "model",
        "created": created,
        "owned_by": "vllm",
        "root": None,
        "parent": None,
        "max_model_len": None,
        "permission": [],
    }
    card.update(fields)
    return card
