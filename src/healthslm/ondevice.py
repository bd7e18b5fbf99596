"""`healthslm ondevice`: each GGUF on llama.cpp beside the Hugging Face model, on the same prompts.

Per engine (each GGUF in a fresh process, the HF model in this one, so each peak RSS is its own): load time
(up to one warm-up token, which pages the weights in), time to first token on task prompts, greedy decode
tokens/s at batch 1 (EOS ignored, the same token count everywhere), file size, and for a GGUF the kernels its
build runs on this CPU. Threads: one per physical core. The physical bound: decoding reads every weight once
per token, so tokens/s <= memory bandwidth / weight bytes; the bandwidth is measured in the same run (a
multi-threaded copy of a 512 MiB buffer).
Accuracy kept: every GGUF scores the closed tasks' `ft` eval examples by label likelihood through llama.cpp
logits, from the same token ids as the HF scorer, beside the HF model's `ft` predictions (evaluate stage).
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
from healthslm.prepare import available_tasks, read_records
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


def _timing(first_token, next_token, prompts: list[list[int]], new_tokens: int) -> dict:
    """TTFT and greedy decode rate: first_token(prompt ids) -> token, next_token(token) -> token."""
    ttfts, rates = [], []
    for ids in prompts:
        start = time.perf_counter()
        token = first_token(ids)
        ttfts.append(time.perf_counter() - start)
        start = time.perf_counter()
        for _ in range(new_tokens - 1):
            token = next_token(token)
        rates.append((new_tokens - 1) / (time.perf_counter() - start))
    return {"ttft_s": round(float(np.mean(ttfts)), 4), "decode_tokens_per_s": round(float(np.mean(rates)), 2)}


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
    llm.eval([llm.token_bos()])  # weights are mapped lazily: page them in as load, not in the first TTFT
    llm.reset()
    load_s = time.perf_counter() - start
    n_vocab = llm.n_vocab()

    def logits_after(ids: list[int]) -> np.ndarray:
        llm.eval(ids)
        return np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(n_vocab,)).copy()

    def first_token(ids: list[int]) -> int:
        llm.reset()  # timed from an empty cache
        return int(np.argmax(logits_after(ids)))

    timing = _timing(first_token, lambda token: int(np.argmax(logits_after([token]))), prompts, new_tokens)
    scores = []
    for context, continuations in scoring:
        # A task's prompts share their instructions: keep what the cache already holds of this one.
        llm.n_tokens = _shared_length(list(llm.input_ids[: llm.n_tokens]), context)
        first = _log_softmax(logits_after(context[llm.n_tokens :]))
        example = []
        for continuation in continuations:
            llm.n_tokens = len(context)  # rewind: eval() drops the KV cache past n_tokens
            total = float(first[continuation[0]])
            for previous, token in zip(continuation, continuation[1:], strict=False):
                total += float(_log_softmax(logits_after([previous]))[token])
            example.append(total)
        scores.append(example)
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
        lambda ids: step(ids, None), lambda token: step([token], state["cache"]), prompts, new_tokens
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


def _in_process(function, *args):
    """Run in a fresh process, so that its peak RSS is its own."""
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=spawn, initializer=exit_quietly_on_interrupt) as pool:
        return pool.submit(function, *args).result()


def closed_task_items(
    params: Params, records_dir: Path, ft_dir: Path, tokenizer, use_chat: bool, prompt_format: str
):
    """[(spec, ft prediction rows, [(context ids, [continuation ids])])] per closed task, as the HF scorer
    tokenizes them. Without ft predictions (ft not in eval.mode): the first eval records, rows empty."""
    from healthslm.scoring import LabelScorer

    scorer = LabelScorer(None, tokenizer)
    out = []
    for spec in [s for s in available_tasks(params.data.datasets, records_dir) if s.closed]:
        path = ft_dir / f"{spec.key}.jsonl"
        records = read_records(records_dir, spec.dataset, spec.name, "eval")
        rows = read_jsonl(path) if path.exists() else []
        by_id = {r["id"]: r for r in records}
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
    bandwidth = _in_process(memory_bandwidth_gbs, threads)  # its 1 GiB of buffers stay out of this RSS
    echo(f"ondevice: memory bandwidth {bandwidth} GB/s (copy, {threads} threads)")
    engines = {}
    for quantization in settings.quantizations:
        path = gguf_file(quantization, gguf_dir)
        if not path.exists():
            raise HealthSLMError(f"{path}: missing; run `dvc repro quantize@{quantization}`")
        result = _in_process(
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
