"""Pick an answer from a task's answers by the model's likelihood: every example gets a valid answer.

Per example, one forward pass over the prompt (plus the tokens all answers share), then one more over the
answers' remaining tokens laid side by side with a tree attention mask (each answer sees the prompt and its
own earlier tokens), reusing the prompt's KV cache. A prefix shared by many prompts (a few-shot header) is
encoded once and its KV cache reused for every example: extended in place, then cut back to the prefix (a
copy per example cost more than the forward pass for 10-shot prompts).
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


def tree_mask(prefix_len: int, lengths: list[int], dtype: torch.dtype) -> torch.Tensor:
    """4D additive mask: token j of answer i attends to the prefix and to tokens 0..j of answer i."""
    total = sum(lengths)
    mask = torch.full((1, 1, total, prefix_len + total), torch.finfo(dtype).min, dtype=dtype)
    mask[..., :prefix_len] = 0
    start = 0
    for length in lengths:
        block = torch.tril(torch.ones(length, length, dtype=torch.bool))
        mask[0, 0, start : start + length, prefix_len + start : prefix_len + start + length].masked_fill_(
            block, 0
        )
        start += length
    return mask


class LabelScorer:
    def __init__(self, model, tokenizer, autocast_bf16: bool = False):
        self.model = model
        self.tokenizer = tokenizer
        self.autocast = torch.autocast("cpu", dtype=torch.bfloat16) if autocast_bf16 else nullcontext()
        self._prefix: tuple[list[int], object] | None = None  # (token ids, KV cache) of a shared prefix

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
    def set_shared_prefix(self, text: str | None, special_tokens: bool = True) -> None:
        """Encode a prefix many prompts start with (e.g. the few-shot examples) once, for reuse."""
        if not text:
            self._prefix = None
            return
        ids = self._encode(text, special_tokens)
        with self.autocast:
            out = self.model(input_ids=torch.tensor([ids]), use_cache=True, logits_to_keep=1)
        self._prefix = (ids, out.past_key_values)

    def _forward_prompt(self, ids: list[int], keep: int):
        """Forward pass over `ids`, starting from the shared prefix's cache when `ids` extends it."""
        start, cache = 0, None
        if self._prefix is not None:
            prefix_ids, prefix_cache = self._prefix
            if len(ids) > len(prefix_ids) + keep and ids[: len(prefix_ids)] == prefix_ids:
                start, cache = len(prefix_ids), prefix_cache
        with self.autocast:
            return self.model(
                input_ids=torch.tensor([ids[start:]]),
                past_key_values=cache,
                use_cache=True,
                logits_to_keep=keep,
            )

    @torch.inference_mode()
    def score(self, context: str, continuations: list[str], special_tokens: bool = True) -> list[float]:
        """Sum of log-probabilities of each continuation given the context."""
        ctx, conts = self.tokenize(context, continuations, special_tokens)
        shared = _common_prefix(conts)
        prefix = ctx + shared
        try:
            out = self._forward_prompt(prefix, keep=len(shared) + 1)
            logp = torch.log_softmax(out.logits[0].float(), dim=-1)
            base = sum(logp[i, tok].item() for i, tok in enumerate(shared))
            suffixes = [c[len(shared) :] for c in conts]
            scores = [base + logp[-1, s[0]].item() for s in suffixes]
            if any(len(s) > 1 for s in suffixes):
                for i, extra in enumerate(self._score_tails(out.past_key_values, len(prefix), suffixes)):
                    scores[i] += extra
        finally:
            self._rewind_shared_prefix()
        return scores

    def _rewind_shared_prefix(self) -> None:
        """Cut the shared prefix's cache back to the prefix, whatever the last example appended to it."""
        if self._prefix is None:
            return
        length = len(self._prefix[0])
        for layer in self._prefix[1].layers:
            if (extra := layer.get_seq_length() - length) > 0:
                layer.crop(-extra)

    def _score_tails(self, cache, prefix_len: int, suffixes: list[list[int]]) -> list[float]:
        """Log-probability of suffix[1:] given prompt + suffix[0], all suffixes in one tree-masked pass."""
        lengths = [len(s) for s in suffixes]
        flat = [token for s in suffixes for token in s]
        positions = [prefix_len + j for length in lengths for j in range(length)]
        mask = tree_mask(prefix_len, lengths, self.model.dtype)
        with self.autocast:
            out = self.model(
                input_ids=torch.tensor([flat]),
                attention_mask=mask,
                position_ids=torch.tensor([positions]),
                past_key_values=cache,
                use_cache=True,
            )
        logp = torch.log_softmax(out.logits[0].float(), dim=-1)
        extras, start = [], 0
        for s in suffixes:
            extras.append(sum(logp[start + j - 1, s[j]].item() for j in range(1, len(s))))
            start += len(s)
        return extras
