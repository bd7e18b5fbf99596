"""What a model of a given shape needs to train on this machine, and a plan that keeps it within budget.

A preset carries its architecture (config.json facts), so a model of that exact shape can be built with
random weights offline: it behaves like the real one for memory and speed (benchmarks/capacity.py).
The training plan estimates the activation memory of the largest batch the data can make (every example at
`max_length`), then turns on gradient checkpointing, caps the tokens of a batch (fewer examples per batch,
more accumulation: the same effective batch), or both, until it fits `train.activation_budget_gb`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict

GB = 1e9
FLOAT32 = 4
# Floats an fp32 LoRA decoder layer keeps per token for its backward pass, per unit of each width (counted
# from the saved tensors of a Llama layer with LoRA dropout on all projections, then fitted to measured peaks
# of the SmolLM2-135M and TinyLlama shapes in benchmarks/capacity.py): residual, norms, the dropout copies
# of each projection's input, q/k/v, rotary, attention output; gate, up, SiLU, product and down's input.
PER_HIDDEN, PER_KV, PER_INTERMEDIATE = 15.0, 3.0, 5.5
# The LM head over the kept (answer) positions: logits, their float32 log-softmax and its gradient.
HEAD_COPIES = 3
DEFAULT_BUDGET_SHARE = 0.10  # of physical RAM, for activations (weights and optimizer come on top)


class Architecture(BaseModel):
    """The config facts that decide a decoder's memory and compute."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    model_type: str
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    vocab_size: int
    head_dim: int | None = None
    tie_word_embeddings: bool = False

    @classmethod
    def of(cls, config) -> Architecture:
        """The architecture of a loaded model's (text) config."""
        text = config.get_text_config() if hasattr(config, "get_text_config") else config
        fields = {name: getattr(text, name, None) for name in cls.model_fields}
        fields["num_key_value_heads"] = fields["num_key_value_heads"] or fields["num_attention_heads"]
        fields["tie_word_embeddings"] = bool(getattr(config, "tie_word_embeddings", False))
        if fields["head_dim"] == fields["hidden_size"] // fields["num_attention_heads"]:
            fields["head_dim"] = None  # the default, as config.json files mostly leave it
        return cls.model_validate(fields)

    @property
    def head_width(self) -> int:
        return self.head_dim or self.hidden_size // self.num_attention_heads  # null: the config default

    @property
    def kv_width(self) -> int:
        return self.num_key_value_heads * self.head_width

    @property
    def parameters(self) -> int:
        attention = self.hidden_size * (2 * self.num_attention_heads * self.head_width + 2 * self.kv_width)
        mlp = 3 * self.hidden_size * self.intermediate_size
        embeddings = self.vocab_size * self.hidden_size * (1 if self.tie_word_embeddings else 2)
        return self.num_hidden_layers * (attention + mlp) + embeddings

    def layer_floats_per_token(self) -> float:
        return (
            PER_HIDDEN * self.hidden_size + PER_KV * self.kv_width + PER_INTERMEDIATE * self.intermediate_size
        )

    def config(self):
        """A transformers config of this shape (for a random-weight twin)."""
        from transformers import AutoConfig

        fields = self.model_dump(exclude_none=True)
        return AutoConfig.for_model(fields.pop("model_type"), **fields)


def twin(architecture: Architecture, seed: int = 0):
    """A model of this shape with random weights, fp32, in eval mode (nothing downloaded)."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(architecture.config(), dtype=torch.float32)
    return model.eval()


def activation_bytes(arch: Architecture, tokens: int, answer_tokens: int, checkpointing: bool) -> float:
    """Estimated activation memory of one training batch (fp32): the decoder layers' saved tensors (all of
    them, or with checkpointing each layer's input plus one layer recomputed) and the answer-only LM head."""
    layer = arch.layer_floats_per_token() * FLOAT32
    if checkpointing:
        layers = tokens * (arch.num_hidden_layers * arch.hidden_size * FLOAT32 + layer)
    else:
        layers = tokens * arch.num_hidden_layers * layer
    return layers + answer_tokens * arch.vocab_size * FLOAT32 * HEAD_COPIES


def default_budget_gb() -> float:
    """10 % of this machine's RAM: weights, optimizer and the evaluation that follows need the rest."""
    return round(DEFAULT_BUDGET_SHARE * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GB, 1)


@dataclass(frozen=True)
class TrainPlan:
    checkpointing: bool
    batch_size: int
    grad_accum: int
    max_batch_tokens: int
    estimated_gb: float  # activations of the largest batch under this plan
    budget_gb: float

    def line(self, recipe_batch: int, recipe_accum: int) -> str:
        parts = [f"gradient checkpointing {'on' if self.checkpointing else 'off'}"]
        if self.batch_size != recipe_batch:
            parts.append(
                f"batch {recipe_batch} x accum {recipe_accum} run as {self.batch_size} x {self.grad_accum}"
            )
        return (
            f"memory plan: largest batch {self.max_batch_tokens} tokens, "
            f"activations ~{self.estimated_gb:.1f} GB "
            f"within the {self.budget_gb:g} GB budget (train.activation_budget_gb): {', '.join(parts)}"
        )


def plan_training(
    arch: Architecture,
    batch_size: int,
    grad_accum: int,
    max_length: int,
    answer_lengths: list[int],
    budget_gb: float,
    checkpointing: bool | None,
    packed: bool = True,
) -> TrainPlan | None:
    """The cheapest plan whose largest batch fits the budget, or None if one example cannot: fewer examples
    per batch with more accumulation first (the same effective batch, no extra compute), then gradient
    checkpointing (a second forward pass), unless `checkpointing` forces one.
    `answer_lengths`: each example's answer tokens (they alone reach the LM head). `packed`: a micro-batch
    may hold several examples (else one)."""
    longest_answers = sorted(answer_lengths, reverse=True)
    divisors = [n for n in range(batch_size, 0, -1) if batch_size % n == 0] if packed else [1]
    for checkpoint in [checkpointing] if checkpointing is not None else [False, True]:
        for per_batch in divisors:
            tokens = per_batch * max_length
            answers = min(sum(longest_answers[:per_batch]), tokens)
            needed = activation_bytes(arch, tokens, answers, checkpoint) / GB
            if needed <= budget_gb:
                accum = grad_accum * batch_size // per_batch
                return TrainPlan(checkpoint, per_batch, accum, tokens, round(needed, 2), budget_gb)
    return None


# Stages whose work grows with the model: training with its train tokens/s, the rest with scoring tokens/s.
TRAIN_STAGES = ("train",)
SCORING_STAGES = ("evaluate", "evaluate_finetuned", "export", "ondevice", "quantize@")


def estimated_run_s(stage_s: dict[str, float], reference: dict, target: dict) -> float:
    """The default run's time for another model: each model stage of a measured run (`stage_s`, made with the
    `reference` preset) scaled by the tokens/s ratio of the two presets in one capacity benchmark run (rows of
    benchmarks/capacity.py: "ours-default" and "score"); other stages as measured."""
    train = reference["ours-default"]["train_tokens_per_s"] / target["ours-default"]["train_tokens_per_s"]
    score = (
        reference["score"]["score_tokens_per_s"]["float32"] / target["score"]["score_tokens_per_s"]["float32"]
    )
    total = 0.0
    for stage, seconds in stage_s.items():
        total += seconds * (
            train if stage in TRAIN_STAGES else score if stage.startswith(SCORING_STAGES) else 1
        )
    return total
