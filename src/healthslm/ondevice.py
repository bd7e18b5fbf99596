"""`healthslm ondevice`: each GGUF on llama.cpp beside the Hugging Face model, on the same prompts.

Per engine (each GGUF in a fresh process, the HF model in this one, so each peak RSS is its own): load time
(up to one warm-up token, which pages the weights in), time to first token on task prompts, prefill and
greedy decode tokens/s at batch 1 (EOS ignored, the same token count everywhere), file size, and for a GGUF
the kernels its build runs on this CPU. Threads: one per physical core. The physical bound: decoding reads
every weight once per token, so tokens/s <= memory bandwidth / weight bytes; the bandwidth is measured in the
same run (a multi-threaded copy of a 512 MiB buffer).
Raw llama.cpp, the harness's anchor: for a GGUF, the same prompts and the same greedy tokens go through
llama_decode alone (nothing read back), interleaved with the harness prompt by prompt;
`decode_ratio_to_raw` and `prefill_ratio_to_raw` are the harness's rates over llama.cpp's own. A small
model's decode is dominated by llama.cpp's fixed per-token cost, so its fraction of the bound says little
about the harness: these ratios do.
Accuracy kept: every GGUF scores the closed tasks' `ft` eval rows (export.accuracy_rows of them per task, a
seeded, label-stratified subset) by label likelihood through llama.cpp logits, from the same token ids as
the HF scorer, beside the HF model's `ft` predictions on the same rows (evaluate stage).
Writes reports/ondevice.json and reports/ondevice/speed_vs_accuracy.png.
"""

from __future__ import annotations

import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from healthslm import metrics
from healthslm.errors import HealthSLMError, exit_quietly_on_interrupt
from healthslm.export import gguf_facts, gguf_file
from healthslm.io import read_jsonl, write_json
from healthslm.models import finetuned as models
from healthslm.params import Params
from healthslm.paths import GGUF_DIR, ONDEVICE_FIGURE, ONDEVICE_FILE, RECORDS_DIR, predictions_dir
from healthslm.prepare import available_tasks, eval_sample, read_records
from healthslm.prompts import answer_continuation, build_context
from healthslm.resources import cpu_name, peak_rss_mb, physical_cores
from healthslm.tasks import TaskSpec

FT_PREDICTIONS = predictions_dir("ft")

COPY_BYTES = 512 * 2**20


def memory_bandwidth_gbs(n_threads: int, repeats: int = 5) -> float:
    """Read + write bytes per second of the best of `repeats` copies of a 512 MiB buffer."""
    import torch

    torch.set_num_threads(n_threads)
    source = torch.ones(COPY_BYTES // 4)
    target = torch.empty_like(source)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        target.copy_(source)
        best = min(best, time.perf_counter() - start)
    return round(2 * COPY_BYTES / best / 1e9, 2)


def _timing(first_token, next_token, prompts: list[list[int]], new_tokens: int, raw=None) -> dict:
    """TTFT, prefill and greedy decode rates: first_token(prompt ids) -> token, next_token(token, position)
    -> token. With `raw` (a Decoder on the same context), llama.cpp alone does each step too, on the same
    cache, just before or just after it (alternating, so that neither always goes second): both meet the
    same moment's machine speed, which on a VM drifts by several % within seconds."""
    ttfts, prefill, rates, raw_prefill, raw_rates = [], [], [], [], []
    for number, ids in enumerate(prompts):
        if raw is not None and number % 2:
            raw_prefill.append(len(ids) / raw.prefill(ids))
        start = time.perf_counter()
        token = first_token(ids)
        ttfts.append(time.perf_counter() - start)
        prefill.append(len(ids) / ttfts[-1])
        if raw is not None and not number % 2:
            raw_prefill.append(len(ids) / raw.prefill(ids))
        harness_s = raw_s = 0.0
        for position in range(len(ids), len(ids) + new_tokens - 1):
            raw_first = raw is not None and position % 2
            if raw_first:
                raw_s += raw.step(token, position)
            start = time.perf_counter()
            following = next_token(token, position)
            harness_s += time.perf_counter() - start
            if raw is not None and not raw_first:
                raw_s += raw.step(token, position)
            token = following
        rates.append((new_tokens - 1) / harness_s)
        if raw is not None:
            raw_rates.append((new_tokens - 1) / raw_s)
    result = {
        "ttft_s": round(float(np.mean(ttfts)), 4),
        "prefill_tokens_per_s": round(float(np.mean(prefill)), 1),
        "decode_tokens_per_s": round(float(np.mean(rates)), 2),
    }
    if raw is not None:
        result["raw_llama_cpp"] = {
            "prefill_tokens_per_s": round(float(np.mean(raw_prefill)), 1),
            "decode_tokens_per_s": round(float(np.mean(raw_rates)), 2),
        }
        for kind in ("prefill", "decode"):
            ratio = result[f"{kind}_tokens_per_s"] / result["raw_llama_cpp"][f"{kind}_tokens_per_s"]
            result[f"{kind}_ratio_to_raw"] = round(ratio, 3)
    return result


class Decoder:
    """llama.cpp through its C API on a loaded model's context (sequence 0): the harness reads the logits of
    what it decodes; `prefill` and `step` are raw llama.cpp, as llama-bench runs it: llama_decode alone,
    nothing read back (the logits are computed all the same)."""

    def __init__(self, llm):
        import llama_cpp

        self.api, self.ctx, self.size, self.vocab = llama_cpp, llm.ctx, llm.n_batch, llm.n_vocab()
        self.batch = llama_cpp.llama_batch_init(self.size, 0, 1)

    def decode(self, tokens: list[int], first_position: int) -> None:
        """Lay `tokens` at first_position.. (at most n_batch of them), logits for the last."""
        batch = self.batch
        batch.n_tokens = len(tokens)
        for i, token in enumerate(tokens):
            batch.token[i], batch.pos[i] = token, first_position + i
            batch.n_seq_id[i], batch.seq_id[i][0] = 1, 0
            batch.logits[i] = i == len(tokens) - 1
        if (code := self.api.llama_decode(self.ctx, batch)) != 0:
            raise HealthSLMError(f"llama_decode returned {code}")

    def forget_from(self, position: int) -> None:
        """Drop the cache from `position` on."""
        self.api.llama_memory_seq_rm(self.api.llama_get_memory(self.ctx), 0, position, -1)

    def read(self, tokens: list[int], first_position: int) -> None:
        """Drop the cache from first_position, then lay `tokens` there in n_batch pieces."""
        self.forget_from(first_position)
        for first in range(0, len(tokens), self.size):
            self.decode(tokens[first : first + self.size], first_position + first)
        self.api.llama_synchronize(self.ctx)

    def logits(self) -> np.ndarray:
        """The last decoded token's logits, a view into llama.cpp's buffer."""
        return np.ctypeslib.as_array(self.api.llama_get_logits_ith(self.ctx, -1), shape=(self.vocab,))

    def first_token(self, prompt: list[int]) -> int:
        """The harness: the prompt from an empty cache, then the greedy next token."""
        self.read(prompt, 0)
        return int(np.argmax(self.logits()))

    def next_token(self, token: int, position: int) -> int:
        self.read([token], position)
        return int(np.argmax(self.logits()))

    def prefill(self, prompt: list[int]) -> float:
        """Raw: seconds to read the prompt from an empty cache."""
        start = time.perf_counter()
        self.read(prompt, 0)
        return time.perf_counter() - start

    def step(self, token: int, position: int) -> float:
        """Raw: seconds to decode one token at `position` again."""
        start = time.perf_counter()
        self.read([token], position)
        return time.perf_counter() - start

    def close(self) -> None:
        self.api.llama_batch_free(self.batch)


def _shared_length(cached: list[int], ids: list[int]) -> int:
    """Tokens at the start of `ids` already in the KV cache (at least the last one is evaluated again)."""
    shared = 0
    for a, b in zip(cached, ids[:-1], strict=False):
        if a != b:
            break
        shared += 1
    return shared


def gguf_worker(path: str, prompts, scoring, new_tokens: int, n_threads: int, n_ctx: int) -> dict:
    """In its own process: load, time, and score the label continuations of every example."""
    import llama_cpp

    start = time.perf_counter()
    # Flash attention: one fused op per layer instead of four, ~10 % of a 135M model's decode and prefill.
    llm = llama_cpp.Llama(
        model_path=path,
        n_ctx=n_ctx,
        n_threads=n_threads,
        n_threads_batch=n_threads,
        flash_attn=True,
        verbose=False,
    )
    decoder = Decoder(llm)
    decoder.first_token([llm.token_bos()])  # weights are mapped lazily: page them in as load, not in the TTFT
    load_s = time.perf_counter() - start
    timing = _timing(decoder.first_token, decoder.next_token, prompts, new_tokens, decoder)

    scores, cached = [], []
    for context, continuations in scoring:
        # A task's prompts share their instructions: keep what the cache already holds of this one.
        shared = _shared_length(cached, context)
        decoder.read(context[shared:], shared)
        first, cached = _log_softmax(decoder.logits()), context
        example = []
        for continuation in continuations:
            # An answer's later tokens one at a time, as a device decodes (a batch of them takes another
            # kernel path in llama.cpp, and moved log-likelihoods by up to 0.2 nats on Q4_1).
            total = float(first[continuation[0]])
            pairs = zip(continuation, continuation[1:], strict=False)
            for position, (previous, token) in enumerate(pairs, len(context)):
                decoder.read([previous], position)
                total += float(_log_softmax(decoder.logits())[token])
            example.append(total)
        scores.append(example)
    decoder.close()
    build = llama_cpp.llama_print_system_info().decode().strip()  # the kernels this build runs here
    timing |= {"peak_rss_mb": peak_rss_mb(), "build": build}
    return {"load_s": round(load_s, 3), **timing, "scores": scores}


def hf_worker(params: Params, prompts, new_tokens: int, n_threads: int) -> dict:
    import torch

    torch.set_num_threads(n_threads)
    choice = models.deployed(params)
    state: dict = {}

    @torch.inference_mode()
    def step(ids: list[int], cache) -> int:
        out = model(input_ids=torch.tensor([ids]), past_key_values=cache, use_cache=True, logits_to_keep=1)
        state["cache"] = out.past_key_values
        return int(out.logits[0, -1].argmax())

    start = time.perf_counter()
    model, _ = models.load(choice, dtype=torch.float32)
    step([0], None)  # one warm-up token, as for each GGUF: the first call's setup counts as load
    load_s = time.perf_counter() - start

    timing = _timing(
        lambda ids: step(ids, None), lambda token, _: step([token], state["cache"]), prompts, new_tokens
    )
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    folder = Path(choice.location)
    return {
        "engine": "transformers fp32",
        "file": folder.as_posix(),
        "size_mb": round(weights / 1e6, 2),
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        "load_s": round(load_s, 3),
        **timing,
        "peak_rss_mb": peak_rss_mb(),
    }


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max()
    return shifted - np.log(np.exp(shifted).sum())


def in_own_process(function, *args):
    """Run in a fresh process, so that its peak RSS is its own."""
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=spawn, initializer=exit_quietly_on_interrupt) as pool:
        return pool.submit(function, *args).result()


def closed_task_items(
    params: Params, records_dir: Path, ft_dir: Path, tokenizer, use_chat: bool, prompt_format: str
):
    """[(spec, ft prediction rows, [(context ids, [continuation ids])])] per closed task, as the HF scorer
    tokenizes them: export.accuracy_rows of the ft rows, drawn as evaluate draws its rows. Without ft
    predictions (ft not in eval.mode): the first eval records, rows empty."""
    from healthslm.scoring import LabelScorer

    scorer = LabelScorer(None, tokenizer)
    out = []
    for spec in [s for s in available_tasks(params.data.datasets, records_dir) if s.closed]:
        path = ft_dir / f"{spec.key}.jsonl"
        records = read_records(records_dir, spec.dataset, spec.name, "eval")
        rows = read_jsonl(path) if path.exists() else []
        by_id = {r["id"]: r for r in records}
        sample = eval_sample(
            [by_id[row["id"]] for row in rows], spec, params.export.accuracy_rows, params.base.seed
        )
        kept = {record["id"] for record in sample}
        rows = [row for row in rows if row["id"] in kept]
        chosen = [by_id[row["id"]] for row in rows] or records[: params.export.bench_prompts]
        items = []
        for record in chosen:
            context = build_context(record, spec, tokenizer, use_chat, prompt_format)
            continuations = [answer_continuation(a, context) for a in spec.spoken_answers]
            items.append(scorer.tokenize(context, continuations, not use_chat))
        out.append((spec, rows, items))
    if not out:
        raise HealthSLMError(f"{records_dir}: no closed task in data.datasets to build prompts from")
    return out


def task_metrics(spec: TaskSpec, rows: list[dict], predicted: list, params: Params) -> dict:
    """Accuracy of `predicted` on the ft rows, resampled by the units evaluate recorded (people, or rows)."""
    gold = [row["gold"] for row in rows]
    samples, seed = params.eval.bootstrap_samples, params.base.seed
    return metrics.score_answers(spec, gold, predicted, samples, seed, metrics.row_units(rows))


def ondevice(
    params: Params,
    gguf_dir: Path = GGUF_DIR,
    records_dir: Path = RECORDS_DIR,
    ft_dir: Path = FT_PREDICTIONS,
    out_file: Path = ONDEVICE_FILE,
    figure_file: Path = ONDEVICE_FIGURE,
    echo=print,
) -> dict:
    from transformers import AutoTokenizer

    settings = params.export
    threads = settings.n_threads or physical_cores()
    choice = models.deployed(params)
    tokenizer = AutoTokenizer.from_pretrained(choice.location)
    use_chat = models.use_chat_template(choice, tokenizer, params.eval.chat_template)
    prompt_format = choice.prompt_format or params.eval.prompt_format
    items = closed_task_items(params, records_dir, ft_dir, tokenizer, use_chat, prompt_format)
    prompts = [ctx for group in zip(*(i for _, _, i in items), strict=False) for ctx, _ in group]
    prompts = prompts[: settings.bench_prompts]
    tasks = [task for task in items if task[1]]  # accuracy kept: tasks with ft predictions
    if not tasks:
        echo("ondevice: no ft predictions (ft not in eval.mode): speed only, no accuracy comparison")
    scoring = [item for _, _, task_items in tasks for item in task_items]
    n_ctx = max(len(ctx) + 8 for ctx, _ in scoring + [(p, None) for p in prompts]) + settings.bench_new_tokens
    bandwidth = in_own_process(memory_bandwidth_gbs, threads)  # its 1 GiB of buffers stay out of this RSS
    echo(f"ondevice: memory bandwidth {bandwidth} GB/s (copy, {threads} threads)")
    engines = {}
    for quantization in settings.quantizations:
        path = gguf_file(quantization, gguf_dir)
        if not path.exists():
            raise HealthSLMError(f"{path}: missing; run `dvc repro quantize@{quantization}`")
        result = in_own_process(
            gguf_worker, str(path), prompts, scoring, settings.bench_new_tokens, threads, n_ctx
        )
        engines[quantization] = {"engine": "llama.cpp", **gguf_facts(path), **result}
    # The HF model runs here, after the GGUF processes: this process holds only a tokenizer besides it.
    engines = {"hf": hf_worker(params, prompts, settings.bench_new_tokens, threads), **engines}
    for name, row in engines.items():
        row["bound_tokens_per_s"] = round(bandwidth * 1e9 / (row["size_mb"] * 1e6), 1)
        row["fraction_of_bound"] = round(row["decode_tokens_per_s"] / row["bound_tokens_per_s"], 3)
        row["tasks"] = _accuracy(tasks, row.pop("scores", None), params)
        echo(_summary_line(name, row))
    result = {"cpu": cpu_name(), "bandwidth_gbs": bandwidth, "n_threads": threads, "prompts": len(prompts)}
    result |= engines
    write_json(out_file, result)
    speed_accuracy_figure(engines, figure_file)
    return result


def _accuracy(tasks, scores: list[list[float]] | None, params: Params) -> dict:
    """Per task: the metric with its CI, and (for a GGUF) agreement with the HF model's answers."""
    out, offset = {}, 0
    for spec, rows, items in tasks:
        hf = [row["answer"] for row in rows]
        if scores is None:
            out[spec.key] = task_metrics(spec, rows, hf, params)
            continue
        chosen = [
            spec.parse_label(spec.label_space[int(np.argmax(s))])
            for s in scores[offset : offset + len(items)]
        ]
        offset += len(items)
        agreement = float(np.mean([str(a) == str(b) for a, b in zip(chosen, hf, strict=True)]))
        out[spec.key] = task_metrics(spec, rows, chosen, params) | {"agreement_with_hf": agreement}
    return out


def _summary_line(name: str, row: dict) -> str:
    return (
        f"ondevice {name}: {row['size_mb']} MB, load {row['load_s']} s, TTFT {row['ttft_s']} s, "
        f"decode {row['decode_tokens_per_s']} tok/s = {row['fraction_of_bound']:.0%} of the bound "
        f"{row['bound_tokens_per_s']}, peak RSS {row['peak_rss_mb']} MB"
    )


def mean_accuracy(row: dict) -> float | None:
    values = [t["accuracy"] for t in row["tasks"].values() if "accuracy_ci_low" in t]
    return float(np.mean(values)) if values else None


def speed_accuracy_figure(engines: dict, path: Path) -> None:
    from healthslm.plots import pyplot, save_png

    plt = pyplot()
    figure, axes = plt.subplots(figsize=(5, 3.5))
    for name, row in engines.items():
        accuracy = mean_accuracy(row)
        if accuracy is not None:
            axes.scatter(row["decode_tokens_per_s"], accuracy, s=max(row["size_mb"] / 4, 10))
            axes.annotate(f"{name} ({row['size_mb']:.0f} MB)", (row["decode_tokens_per_s"], accuracy))
    axes.set_xlabel("decode tokens/s (batch 1)")
    axes.set_ylabel("mean accuracy, accuracy tasks")
    axes.set_title("speed vs accuracy (marker area ~ file size)")
    save_png(figure, path)
