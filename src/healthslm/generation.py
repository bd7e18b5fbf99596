"""Generation: the seed's greedy decode + regex parsing, constrained numeric decoding, and timing.

`generate` reproduces HealthSLM-Bench's loop (greedy, 20 new tokens, regex on "<answer template> <output>")
so its invalid-output rate can be measured; `number` decodes digits only, so a continuous task (calories)
always gets a number.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

import torch
from transformers.generation.streamers import BaseStreamer

from healthslm.prompts import encode_prompt
from healthslm.tasks import TaskSpec


class _FirstTokenClock(BaseStreamer):
    """generate() calls put() with the prompt, then per new token: the second call is the first token."""

    def __init__(self) -> None:
        self.calls, self.first_token_at = 0, None

    def put(self, value) -> None:
        self.calls += 1
        if self.calls == 2:
            self.first_token_at = time.perf_counter()

    def end(self) -> None:
        pass


@dataclass
class Generated:
    text: str
    new_tokens: int
    ttft_s: float  # prompt processing + first token, of the whole batch
    total_s: float  # of the whole batch it was decoded in


def _eos_ids(model, tokenizer) -> set[int]:
    configured = model.generation_config.eos_token_id
    ids = set(configured if isinstance(configured, list) else [configured])
    return {i for i in ids | {tokenizer.eos_token_id} if i is not None}


@torch.inference_mode()
def generate_batch(
    model,
    tokenizer,
    contexts: list[str],
    max_new_tokens: int,
    special_tokens: bool,
    sample_seed: int | None = None,
) -> list[Generated]:
    """Greedy (or, with a seed, the seed's temperature 0.3 / top-p 0.9 sampling) continuations of `contexts`,
    left-padded into one batch. Give it contexts of similar length (`length_buckets`): padding is wasted work.
    Every result carries the batch's time to first token and total time."""
    encoded = [encode_prompt(tokenizer, c, special_tokens) for c in contexts]
    width, pad = max(len(e) for e in encoded), tokenizer.eos_token_id
    ids = torch.tensor([[pad] * (width - len(e)) + e for e in encoded], device=model.device)
    mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in encoded], device=model.device)
    clock = _FirstTokenClock()
    sampling = {}
    if sample_seed is not None:
        torch.manual_seed(sample_seed)
        sampling = {"do_sample": True, "temperature": 0.3, "top_p": 0.9}
    start = time.perf_counter()
    out = model.generate(
        input_ids=ids,
        attention_mask=mask,
        max_new_tokens=max_new_tokens,
        do_sample=bool(sampling),
        pad_token_id=pad,
        streamer=clock,
        **sampling,
    )
    total = time.perf_counter() - start
    ttft = (clock.first_token_at or time.perf_counter()) - start
    eos, results = _eos_ids(model, tokenizer), []
    for row in out[:, width:].tolist():
        # A finished sequence is padded with EOS until the whole batch is done: count up to its first EOS.
        length = next((i + 1 for i, token in enumerate(row) if token in eos), len(row))
        text = tokenizer.decode(row[:length], skip_special_tokens=True)
        results.append(Generated(text, length, ttft, total))
    return results


def generate(
    model, tokenizer, context: str, max_new_tokens: int, special_tokens: bool, sample_seed: int | None = None
) -> Generated:
    """One continuation of `context` (batch 1, as the seed's loop)."""
    return generate_batch(model, tokenizer, [context], max_new_tokens, special_tokens, sample_seed)[0]


def length_buckets(lengths: list[int], size: int) -> list[list[int]]:
    """Indices grouped into batches of up to `size` by length, so a batch pads little."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    return [order[i : i + size] for i in range(0, len(order), size)]


_NUMBER = r"(\d+(?:\.\d+)?)"


def parse_answer(spec: TaskSpec, generated: str) -> str | None:
    """The seed's parsing: its regex on "<answer template> <output>", else the first number / answer word of
    the output. (The seed's fallback searched the template too, so "PHQ-4" in GLOBEM's template read as a
    valid answer "4" whatever the model said; ours searches only what the model wrote.)

    Returns one of the task's spoken answers (closed tasks) or a number as text, or None (invalid).
    """
    text = f"{spec.answer_prefix} {generated.strip()}" if spec.answer_prefix else generated
    if spec.label_kind in ("int", "float") or spec.spoken_answers[0].isdigit():
        match = re.search(re.escape(spec.answer_prefix) + r":?\s*" + _NUMBER, text) or re.search(
            _NUMBER, generated
        )
        if not match:
            return None
        value = match.group(1)
        if spec.label_kind != "float" and value.endswith(".0"):
            value = value[:-2]
        return value if not spec.closed or value in spec.spoken_answers else None
    words = "|".join(re.escape(a) for a in sorted(spec.spoken_answers, key=len, reverse=True))
    match = re.search(rf"\b({words})\b", generated, flags=re.IGNORECASE)
    if not match:
        return None
    lowered = {a.lower(): a for a in spec.spoken_answers}
    return lowered[match.group(1).lower()]


class NumberDecoder:
    """Greedy decoding restricted to a number: a leading space, ASCII digits and one decimal point. It stops
    where the model's own best token would end the number (" calories", EOS, a newline): "250 calories"
    reads 250, not a forced 2500."""

    def __init__(self, model, tokenizer, max_tokens: int = 8):
        self.model, self.tokenizer, self.max_tokens = model, tokenizer, max_tokens
        pieces = {i: tokenizer.convert_tokens_to_string([t]) for t, i in tokenizer.get_vocab().items()}
        self.pieces = pieces
        # ASCII only: "²" passes str.isdigit, and float() refuses it
        self.digits = [i for i, p in pieces.items() if p.isascii() and p.isdigit()]
        self.point = [i for i, p in pieces.items() if p == "."]
        self.space = [i for i, p in pieces.items() if p == " "]

    def _allowed(self, step: int, text: str) -> list[int]:
        if step == 0:
            return self.digits + self.space
        if not any(c.isdigit() for c in text):
            return self.digits
        return self.digits + ([] if "." in text else self.point)

    @torch.inference_mode()
    def __call__(self, context: str, special_tokens: bool) -> str:
        device = self.model.device
        ids = torch.tensor([encode_prompt(self.tokenizer, context, special_tokens)], device=device)
        out = self.model(input_ids=ids, use_cache=True, logits_to_keep=1)
        text = ""
        for step in range(self.max_tokens):
            logits = out.logits[0, -1]
            allowed = self._allowed(step, text)
            if any(c.isdigit() for c in text) and int(logits.argmax()) not in allowed:
                break  # the model would end the number here
            choice = max(allowed, key=lambda i: logits[i].item())
            text += self.pieces[choice]
            out = self.model(
                input_ids=torch.tensor([[choice]], device=device),
                past_key_values=out.past_key_values,
                use_cache=True,
            )
        return text.strip().rstrip(".") or "0"
