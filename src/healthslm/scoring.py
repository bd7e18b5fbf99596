"""Pick an answer from a task's label space by the model's likelihood: every example gets a valid answer.

One forward pass over the prompt (plus the tokens all answers share), then the candidates' remaining
tokens in one batch that reuses the prompt's KV cache.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch


def bf16_supported() -> bool:
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:
        return False


def _common_prefix(sequences: list[list[int]]) -> list[int]:
    prefix = []
    for column in zip(*sequences, strict=False):
        if len(set(column)) != 1:
            break
        prefix.append(column[0])
    return prefix if all(len(s) > len(prefix) for s in sequences) else prefix[:-1]


class LabelScorer:
    def __init__(self, model, tokenizer, autocast_bf16: bool = False):
        self.model = model
        self.tokenizer = tokenizer
        self.autocast = torch.autocast("cpu", dtype=torch.bfloat16) if autocast_bf16 else nullcontext()

    def _encode(self, text: str, special: bool) -> list[int]:
        return self.tokenizer(text, add_special_tokens=special).input_ids

    def tokenize(
        self, context: str, continuations: list[str], special: bool
    ) -> tuple[list[int], list[list[int]]]:
        ctx = self._encode(context, special)
        conts = []
        for cont in continuations:
            joint = self._encode(context + cont, special)
            # Prefer the joint tokenization (how the text would really be read); fall back if it merges
            # across the boundary.
            conts.append(joint[len(ctx) :] if joint[: len(ctx)] == ctx else self._encode(cont, False))
        return ctx, conts

    @torch.inference_mode()
    def score(self, context: str, continuations: list[str], special_tokens: bool = True) -> list[float]:
        """Sum of log-probabilities of each continuation given the context."""
        ctx, conts = self.tokenize(context, continuations, special_tokens)
        shared = _common_prefix(conts)
        prefix = ctx + shared
        with self.autocast:
            out = self.model(input_ids=torch.tensor([prefix]), use_cache=True, logits_to_keep=len(shared) + 1)
        logp = torch.log_softmax(out.logits[0].float(), dim=-1)
        base = sum(logp[i, tok].item() for i, tok in enumerate(shared))
        suffixes = [c[len(shared) :] for c in conts]
        scores = [base + logp[-1, s[0]].item() for s in suffixes]
        longer = [i for i, s in enumerate(suffixes) if len(s) > 1]
        if longer:
            for i, extra in zip(
                longer,
                self._score_tails(out.past_key_values, len(prefix), [suffixes[i] for i in longer]),
                strict=True,
            ):
                scores[i] += extra
        return scores

    def _score_tails(self, cache, prefix_len: int, suffixes: list[list[int]]) -> list[float]:
        """Log-probability of suffix[1:] given prompt + suffix[0], for all suffixes in one batch."""
        width = max(len(s) for s in suffixes)
        pad = self.tokenizer.pad_token_id or 0
        ids = torch.tensor([s + [pad] * (width - len(s)) for s in suffixes])
        mask = torch.ones(len(suffixes), prefix_len + width, dtype=torch.long)
        for row, s in enumerate(suffixes):
            mask[row, prefix_len + len(s) :] = 0  # right padding: never attended by real tokens
        cache.batch_repeat_interleave(len(suffixes))
        with self.autocast:
            out = self.model(input_ids=ids, attention_mask=mask, past_key_values=cache, use_cache=True)
        logp = torch.log_softmax(out.logits.float(), dim=-1)
        return [
            sum(logp[row, j - 1, s[j]].item() for j in range(1, len(s))) for row, s in enumerate(suffixes)
        ]
