"""Batched greedy generation with token log-probabilities, for evaluating a student offline.

It renders prompts the way serving does (the tokenizer's chat template with the generation
prompt), decodes greedily, stops at the end-of-turn token, and keeps what the router's
features need: each generated token's log-probability and the top alternatives of the first.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

TOP_K = 5


@dataclass
class Generation:
    text: str
    logprobs: list[float]
    """Log-probability of each generated token (the end-of-turn token excluded)."""
    first_alternatives: list[float]
    """Log-probabilities of the ``TOP_K`` most likely first tokens."""
    finish_reason: str
    """``stop`` (end-of-turn reached) or ``length``."""


@dataclass
class Prompt:
    messages: list[dict[str, str]] | None = None
    prompt: str | None = None


class StudentRunner:
    """A loaded student (full model, or base plus LoRA adapter) that generates in batches."""

    def __init__(self, weights: str, adapter_path: str | None = None, device: str = "auto"):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = device
        self.tokenizer = AutoTokenizer.from_pretrained(adapter_path or weights)
        model = AutoModelForCausalLM.from_pretrained(
            weights, dtype=torch.float32 if device == "cpu" else "auto"
        )
        if adapter_path:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, adapter_path).merge_and_unload()
        self.model = model.to(device).eval()
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.stop_ids = self._stop_ids()

    def _stop_ids(self) -> list[int]:
        ids: set[int] = set()
        configured = self.model.generation_config.eos_token_id
        if isinstance(configured, int):
            ids.add(configured)
        elif configured:
            ids.update(configured)
        if self.tokenizer.eos_token_id is not None:
            ids.add(self.tokenizer.eos_token_id)
        for token in ("<|im_end|>", "<|eot_id|>", "<|end|>"):
            token_id = self.tokenizer.convert_tokens_to_ids(token)
            if isinstance(token_id, int) and token_id != self.tokenizer.unk_token_id:
                ids.add(token_id)
        return sorted(ids)

    def render(self, prompt: Prompt) -> str:
        if prompt.messages is not None:
            return self.tokenizer.apply_chat_template(
                prompt.messages, add_generation_prompt=True, tokenize=False
            )
        return prompt.prompt or ""

    def generate(
        self, prompts: Sequence[Prompt], *, max_new_tokens: int = 64, batch_size: int = 32
    ) -> list[Generation]:
        out: list[Generation] = []
        for start in range(0, len(prompts), batch_size):
            out += self._batch(prompts[start : start + batch_size], max_new_tokens)
        return out

    def latency_ms(self, prompts: Sequence[Prompt], *, max_new_tokens: int = 64) -> dict[str, Any]:
        """Single-request generation time over ``prompts`` (p50, p95, mean in ms)."""
        times = []
        for prompt in prompts:
            started = time.perf_counter()
            self._batch([prompt], max_new_tokens)
            times.append((time.perf_counter() - started) * 1000)
        if not times:
            return {"p50": None, "p95": None, "mean": None, "n": 0}
        ordered = sorted(times)
        return {
            "p50": round(statistics.median(ordered), 2),
            "p95": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 2),
            "mean": round(statistics.fmean(ordered), 2),
            "n": len(ordered),
        }

    def _batch(self, prompts: Sequence[Prompt], max_new_tokens: int) -> list[Generation]:
        torch = self.torch
        texts = [self.render(p) for p in prompts]
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        enc = {k: v.to(self.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
        with torch.inference_mode():
            result = self.model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                output_scores=True,
                return_dict_in_generate=True,
                eos_token_id=self.stop_ids,
                pad_token_id=self.tokenizer.pad_token_id,
            )
        steps = torch.stack(result.scores, dim=1).float().log_softmax(dim=-1)  # (b, t, vocab)
        generated = result.sequences[:, enc["input_ids"].shape[1] :]
        chosen = steps.gather(-1, generated.unsqueeze(-1)).squeeze(-1)
        first_top = steps[:, 0, :].topk(min(TOP_K, steps.shape[-1]), dim=-1).values
        out = []
        stop = set(self.stop_ids)
        for i in range(len(prompts)):
            ids = generated[i].tolist()
            end = next((j for j, t in enumerate(ids) if t in stop), None)
            keep = ids if end is None else ids[:end]
            out.append(
                Generation(
                    text=self.tokenizer.decode(keep, skip_special_tokens=True).strip(),
                    logprobs=chosen[i, : len(keep)].tolist(),
                    first_alternatives=first_top[i].tolist(),
                    finish_reason="length" if end is None else "stop",
                )
            )
        return out
