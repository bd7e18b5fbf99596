"""Pick an answer from a task's answers by the model's likelihood: every example gets a valid answer.

Per example, one forward pass over the prompt with every answer laid after it side by side, under a tree
attention mask: each answer sees the prompt and its own earlier tokens, not the other answers. Fusing the
answers into the prompt's pass saved a second pass per example, 15 % of the time on PMData few-shot prompts
(benchmarks/eval_speed.py). A prefix shared by many prompts (a few-shot header) is encoded once and its KV
cache reused for every example: extended in place, then cut back to the prefix (a copy per example cost
more than the forward pass for 10-shot prompts).
"""

from __future__ import annotations

import torch

from healthslm.models.dtype import autocast, fp32_head
from healthslm.prompts import encode_prompt


def _common_prefix(sequences: list[list[int]]) -> list[int]:
    prefix = []
    for column in zip(*sequences, strict=False):
        if len(set(column)) != 1:
            break
        prefix.append(column[0])
    return prefix if all(len(s) > len(prefix) for s in sequences) else prefix[:-1]


def _positions(first: int, prompt_len: int, suffixes: list[list[int]]) -> list[int]:
    """Position ids of the prompt from `first` on (earlier ones sit in the KV cache), then of each answer
    as if it alone followed the prompt."""
    return list(range(first, prompt_len)) + [prompt_len + j for s in suffixes for j in range(len(s))]


def tree_mask(cached: int, prompt_len: int, lengths: list[int], dtype: torch.dtype) -> torch.Tensor:
    """4D additive mask over `cached` tokens already in the KV cache, then a prompt of `prompt_len` tokens,
    then answers of `lengths` side by side: the prompt is causal; token j of answer i attends to the cache,
    the whole prompt and tokens 0..j of answer i."""
    queries = prompt_len + sum(lengths)
    mask = torch.full((1, 1, queries, cached + queries), torch.finfo(dtype).min, dtype=dtype)
    mask[..., :cached] = 0
    mask[..., prompt_len:, cached : cached + prompt_len] = 0
    start = 0
    for length in [prompt_len, *lengths]:
        block = torch.tril(torch.ones(length, length, dtype=torch.bool))
        rows = slice(start, start + length)
        mask[0, 0, rows, cached + start : cached + start + length].masked_fill_(block, 0)
        start += length
    return mask


class LabelScorer:
    def __init__(self, model, tokenizer, dtype: str = "float32"):
        self.model = model
        self.tokenizer = tokenizer
        self.dtype = dtype  # float32, or bfloat16 autocast with fp32 logits (models.dtype)
        self._prefix: tuple[list[int], object] | None = None  # (token ids, KV cache) of a shared prefix

    def _encode(self, text: str, special: bool) -> list[int]:
        return encode_prompt(self.tokenizer, text, special)

    def tokenize(
        self, context: str, continuations: list[str], special: bool
    ) -> tuple[list[int], list[list[int]]]:
        ctx = self._encode(context, special)
        conts = []
        for cont in continuations:
            joint = self._encode(context + cont, special)
            # Prefer the joint tokenization (how the text would really be read); fall back if it merges
            # across the boundary.
            alone = self.tokenizer(cont, add_special_tokens=False).input_ids
            conts.append(joint[len(ctx) :] if joint[: len(ctx)] == ctx else alone)
        return ctx, conts

    @torch.inference_mode()
    def set_shared_prefix(self, text: str | None, special_tokens: bool = True) -> None:
        """Encode a prefix many prompts start with (e.g. the few-shot examples) once, for reuse."""
        if not text:
            self._prefix = None
            return
        ids = self._encode(text, special_tokens)
        with autocast(self.dtype):
            out = self.model(
                input_ids=torch.tensor([ids], device=self.model.device), use_cache=True, logits_to_keep=1
            )
        self._prefix = (ids, out.past_key_values)

    def _cached_prefix(self, ids: list[int], keep: int) -> tuple[int, object]:
        """(length, KV cache) of the shared prefix when `ids` extends it by at least `keep` tokens."""
        if self._prefix is not None:
            prefix_ids, prefix_cache = self._prefix
            if len(ids) >= len(prefix_ids) + keep and ids[: len(prefix_ids)] == prefix_ids:
                return len(prefix_ids), prefix_cache
        return 0, None

    def _layout(
        self, context: str, continuations: list[str], special: bool
    ) -> tuple[list[int], list[int], list[list[int]]]:
        """(prompt ids, the answers' shared first tokens, each answer's own tokens): the shared tokens join
        the prompt, so the answers lie side by side after it."""
        ctx, conts = self.tokenize(context, continuations, special)
        shared = _common_prefix(conts)
        return ctx + shared, shared, [c[len(shared) :] for c in conts]

    @staticmethod
    def _read(logits: torch.Tensor, shared: list[int], suffixes: list[list[int]]) -> list[float]:
        """Rows 0..len(shared) of `logits` predict the shared tokens and every answer's first token; then one
        row per answer token predicts that answer's next token."""
        logp = torch.log_softmax(logits.float(), dim=-1)
        base = sum(logp[i, token].item() for i, token in enumerate(shared))
        scores, row = [], len(shared) + 1
        for suffix in suffixes:
            tail = sum(logp[row + j, suffix[j + 1]].item() for j in range(len(suffix) - 1))
            scores.append(base + logp[len(shared), suffix[0]].item() + tail)
            row += len(suffix)
        return scores

    @torch.inference_mode()
    def score(self, context: str, continuations: list[str], special_tokens: bool = True) -> list[float]:
        """Sum of log-probabilities of each continuation given the context."""
        prompt, shared, suffixes = self._layout(context, continuations, special_tokens)
        cached, cache = self._cached_prefix(prompt, keep=len(shared) + 1)
        own = prompt[cached:]
        flat = [token for s in suffixes for token in s]
        positions = _positions(cached, len(prompt), suffixes)
        device = self.model.device  # a CUDA GPU where evaluate put the model there
        mask = tree_mask(cached, len(own), [len(s) for s in suffixes], self.model.dtype).to(device)
        try:
            with autocast(self.dtype), fp32_head(self.model, self.dtype):
                out = self.model(
                    input_ids=torch.tensor([own + flat], device=device),
                    attention_mask=mask,
                    position_ids=torch.tensor([positions], device=device),
                    past_key_values=cache,
                    use_cache=cache is not None,
                    logits_to_keep=len(shared) + 1 + len(flat),
                )
        finally:
            self._rewind_shared_prefix()
        return self._read(out.logits[0], shared, suffixes)

    @torch.inference_mode()
    def score_batch(
        self, items: list[tuple[str, list[str]]], special_tokens: bool = True
    ) -> list[list[float]]:
        """`score` for several (context, continuations) in one forward pass, to fill a GPU
        (eval.score_batch_size). Each example is laid out as in `score`, left-padded to the longest so that
        every example's scored rows end the sequence; pad tokens see only themselves. No shared-prefix cache:
        the batch re-reads the prefix, which a GPU does in parallel."""
        if len(items) == 1:
            return [self.score(*items[0], special_tokens)]
        layouts = [self._layout(context, conts, special_tokens) for context, conts in items]
        sequences = [prompt + [t for s in suffixes for t in s] for prompt, _, suffixes in layouts]
        width = max(map(len, sequences))
        dtype, device = self.model.dtype, self.model.device
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.full((len(items), width), pad, dtype=torch.long)
        positions = torch.zeros((len(items), width), dtype=torch.long)
        mask = torch.full((len(items), 1, width, width), torch.finfo(dtype).min, dtype=dtype)
        mask[:, 0].diagonal(dim1=-2, dim2=-1).fill_(0)  # a pad row attends to itself: no all-masked row
        for i, ((prompt, _, suffixes), sequence) in enumerate(zip(layouts, sequences, strict=True)):
            start = width - len(sequence)
            ids[i, start:] = torch.tensor(sequence)
            positions[i, start:] = torch.tensor(_positions(0, len(prompt), suffixes))
            mask[i, :, start:, start:] = tree_mask(0, len(prompt), [len(s) for s in suffixes], dtype)
        kept = [len(shared) + 1 + sum(map(len, suffixes)) for _, shared, suffixes in layouts]
        with autocast(self.dtype), fp32_head(self.model, self.dtype):
            out = self.model(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                position_ids=positions.to(device),
                use_cache=False,
                logits_to_keep=max(kept),
            )
        return [
            self._read(out.logits[i, -keep:], shared, suffixes)
            for i, (keep, (_, shared, suffixes)) in enumerate(zip(kept, layouts, strict=True))
        ]

    def _rewind_shared_prefix(self) -> None:
        """Cut the shared prefix's cache back to the prefix, whatever the last example appended to it."""
        if self._prefix is None:
            return
        length = len(self._prefix[0])
        for layer in self._prefix[1].layers:
            if (extra := layer.get_seq_length() - length) > 0:
                layer.crop(-extra)
