"""Render instruction records into model prompts, in two formats.

`seed` reproduces HealthSLM-Bench's prompts byte for byte for its datasets (PMData, AW_FB, GLOBEM): zero-shot
"<instruction> <question>" with every number in the question wrapped in double quotes, then " " + the answer
template + " " ("... The predicted fatigue level is ", trailing space included, as its inference.py builds
it); few-shot, its header and "<instruction> <question> <answer>" examples (numbers unquoted) before that.
The answer is scored as the text that follows: "<answer>." after the seed's trailing space, " <answer>."
where the prompt ends without one (our compact prompts, and the datasets the paper does not have).

`compact` carries the same information in fewer tokens: a one-line task, and the readings as a TOON
object with rounded, rescaled values (steps in hundreds, sleep in hours) and missing values as null.
Text tasks have nothing to compress and render as in `seed`.
"""

from __future__ import annotations

import re

import toon_format

from healthslm.data.readings import FIELD
from healthslm.tasks import TaskSpec

_NUMBER = re.compile(r"(\d+(\.\d+)?)")
_LEADING_NUMBER = re.compile(r"\s*(-?\d+(?:\.\d+)?)")

# seed field name -> (compact name, divisor, decimals)
COMPACT_FIELDS = {
    "pmdata": {
        "Steps": ("steps_x100", 100, 0),
        "Burned Calorories": ("kcal_x100", 100, 0),
        "Resting Heart Rate": ("rest_hr", 1, 0),
        "SleepMinutes": ("sleep_x10min", 10, 0),
    },
    "aw_fb": {
        "Steps": ("steps", 1, 0),
        "Burned Calorories": ("kcal", 1, 0),
        "Heart Rate": ("hr", 1, 0),
        "Duration": ("duration", 1, 0),
        "MET Value": ("met", 1, 0),
    },
    "globem": {
        "Steps": ("steps_x100", 100, 0),
        "Sleep_efficiency": ("sleep_eff_pct", 1, 0),
        "Time_in_bed_after_wakeup": ("in_bed_after_wake_min", 1, 0),
        "Sleep_duration": ("sleep_h", 60, 1),
        "Time_stay_awake_but_still_in_bed": ("awake_in_bed_min", 1, 0),
        "Time_spent_to_fall_asleep": ("fall_asleep_min", 1, 0),
    },
}
MISSING_AS_ZERO = {"Resting Heart Rate"}  # the PMData tables record a missing resting HR as 0.0


def seed_question(record: dict) -> str:
    quoted = _NUMBER.sub(r'"\1"', record["input"])
    return f"{record['instruction']} {quoted}"


def _rescale(value: float, divisor: float, decimals: int) -> float | int:
    scaled = round(value / divisor, decimals)
    return int(scaled) if decimals == 0 else scaled


def compact_readings(record: dict, dataset: str) -> dict:
    fields = COMPACT_FIELDS[dataset]
    readings: dict = {}
    for name, raw in FIELD.findall(record["input"]):
        if name == "Mood":
            readings["mood_of_5"] = int(_LEADING_NUMBER.match(raw).group(1))
            continue
        if name not in fields:
            readings[name.lower().replace(" ", "_")] = raw.strip()
            continue
        key, divisor, decimals = fields[name]
        if raw.startswith("["):
            values = [float(v) for v in raw.strip("[]").split(",") if v.strip()]
            readings[key] = [
                None if name in MISSING_AS_ZERO and v == 0 else _rescale(v, divisor, decimals) for v in values
            ]
        elif match := _LEADING_NUMBER.match(raw):
            readings[key] = _rescale(float(match.group(1)), divisor, decimals)
    return readings


def compact_question(record: dict, spec: TaskSpec) -> str:
    if spec.label_kind == "int":
        task = f"Predict {spec.name.replace('_', ' ')} ({spec.label_space[0]}-{spec.label_space[-1]})"
    elif spec.closed:
        task = f"Predict {spec.name}: " + ", ".join(
            f"{answer}={label}" for answer, label in zip(spec.spoken_answers, spec.label_space, strict=True)
        )
    else:
        task = f"Predict {spec.name}"
    return f"{task}:\n{toon_format.encode(compact_readings(record, spec.dataset))}"


def question(record: dict, spec: TaskSpec, prompt_format: str) -> str:
    if prompt_format == "compact" and spec.dataset in COMPACT_FIELDS:
        return compact_question(record, spec)
    if spec.input_first:  # IMHI: "Post: ... Question: ... is"
        return f"{record['input']} {record['instruction']}"
    if spec.dataset in COMPACT_FIELDS:  # HealthSLM-Bench's wearable prompts
        return seed_question(record)
    return f"{record['instruction']}\n{record['input']}"


def starts_a_word(context: str) -> bool:
    """Whether an answer after `context` starts without a space: after the seed's trailing space, or at the
    start of the chat template's assistant turn (after its newline)."""
    return context[-1:].isspace()


def _adds_bos(tokenizer) -> bool:
    return tokenizer.bos_token is not None and tokenizer("").input_ids[:1] == [tokenizer.bos_token_id]


def trainer_prompt(context: str, tokenizer, use_chat: bool) -> str:
    """The prompt text as the trainer gets it: TRL tokenizes it with the tokenizer's special tokens, so a chat
    turn that opens with the BOS text (Llama 3's and Phi-3's templates) loses that text where the tokenizer
    adds BOS itself: one BOS, not two."""
    bos = tokenizer.bos_token
    return context[len(bos) :] if use_chat and _adds_bos(tokenizer) and context.startswith(bos) else context


def encode_prompt(tokenizer, context: str, special_tokens: bool) -> list[int]:
    """A prompt's token ids, the one rule of the trainer, the scorers and the decoders. A raw prompt
    (`special_tokens`) gets the tokenizer's special tokens. A chat turn (the template writes the special
    tokens it wants) gets them too where the tokenizer adds BOS, minus the BOS text of its template
    (trainer_prompt): Llama 3 and Phi-3 start with one BOS, and TinyLlama's template, which has none, with
    the one its tokenizer adds, as TRL trains it and llama.cpp reads it."""
    if special_tokens:
        return tokenizer(context).input_ids
    if _adds_bos(tokenizer):
        return tokenizer(trainer_prompt(context, tokenizer, True)).input_ids
    return tokenizer(context, add_special_tokens=False).input_ids


def answer_continuation(answer: str, context: str) -> str:
    """The answer as it follows the prompt: a word of its own where the context ends in white space, else
    after a space."""
    return f"{answer}." if starts_a_word(context) else f" {answer}."


def _example(record: dict, spec: TaskSpec, prompt_format: str) -> str:
    if prompt_format == "compact" and spec.dataset in COMPACT_FIELDS:
        return f"{compact_question(record, spec)}\n{record['output']}"
    if spec.input_first:
        return f"{record['input']} {record['instruction']} {record['output']}"
    return f"{record['instruction']} {record['input']} {record['output']}"  # the seed leaves these unquoted


def fewshot_header(examples: list[dict], spec: TaskSpec, prompt_format: str) -> str:
    """HealthSLM-Bench's few-shot header, byte for byte in the seed format."""
    if not examples:
        return ""
    header = (
        f"You are a health assistant. Your mission is to read the following {len(examples)} examples and "
        "return your prediction based on the health query.\n"
    )
    for number, example in enumerate(examples, start=1):
        header += f"\nExample {number}\n{_example(example, spec, prompt_format)}\n"
    return header + "\nFinally, please answer to the below question:\n"


def build_context(
    record: dict,
    spec: TaskSpec,
    tokenizer,
    use_chat_template: bool,
    prompt_format: str = "seed",
    examples: list[dict] | None = None,
) -> str:
    """The text the model sees, ending just before the answer: with the seed's trailing space in the seed
    format of the seed's datasets, without one otherwise."""
    text = fewshot_header(examples or [], spec, prompt_format) + question(record, spec, prompt_format)
    prefix = "" if spec.input_first else spec.answer_prefix
    if prefix and prompt_format == "seed" and spec.dataset in COMPACT_FIELDS:
        prefix += " "
    if use_chat_template:
        messages = [{"role": "user", "content": text}]
        head = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return head + prefix if prefix else head.rstrip(" ")
    return f"{text} {prefix}" if prefix else text


def shared_prefix(context: str, record: dict, spec: TaskSpec, prompt_format: str) -> str:
    """The part of `context` before the record's own question: the same for every record of a task."""
    own = question(record, spec, prompt_format)
    cut = context.rfind(own)
    return context[:cut] if cut > 0 else ""
