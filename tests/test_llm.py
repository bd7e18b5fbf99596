"""Augmentation and the LLM judge against a real llama.cpp server (llama_cpp.server on 127.0.0.1 with the
embedded GGUF): cache, kill-and-resume, the privacy rule, the strict-JSON judge, the GX gate over augmented
records."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

from healthslm.augment import augment
from healthslm.augmented import explanation, stated_label
from healthslm.data.registry import all_tasks
from healthslm.errors import HealthSLMError
from healthslm.judge import judge
from healthslm.params import Params, parse_params
from healthslm.prepare import read_records, training_order
from healthslm.tasks import BUILTIN_TASKS
from healthslm.validate_augmented import read_augmented, validate_augmented
from tests.conftest import ROOT
from tests.fault_endpoint import FAULTS, fault_endpoint, listener

TASKS = {spec.key: spec for spec in BUILTIN_TASKS}
SECRETS = {"OPENAI_API_KEY": "sk-test-0penai-SECRET", "HF_TOKEN": "hf_test_SECRET", "WANDB_API_KEY": "w" * 40}


def params(**blocks) -> Params:
    raw = {"data": {"datasets": ["pmdata", "pubmedqa", "dr", "dreaddit", "medquad"]}}
    for block, values in blocks.items():
        raw[block] = values
    return Params.model_validate(raw)


def test_stated_label_reads_the_first_stated_answer():
    fatigue, stress = TASKS["pmdata_fatigue"], TASKS["dreaddit_stress"]
    assert stated_label(stress, "Yes. Reasoning: the poster ...") == "yes"
    assert stated_label(stress, 'The answer to the question "Does the poster suffer?" is: no.') == "no"
    assert stated_label(stress, "The poster shows no sign") is None  # "no" not stated as the answer
    assert stated_label(fatigue, "3. Reasoning: ...") == 3
    assert stated_label(fatigue, "10 hours of sleep") is None  # not in the label space 0-5
    assert stated_label(TASKS["aw_fb_activity"], "Running 7 METs, since ...") == "Running 7 METs"
    # What training appends to the label: the response after its label statement.
    assert explanation(stress, "Yes. Reasoning: the poster ...") == "Reasoning: the poster ..."
    assert explanation(stress, 'The answer to "Is it?" is: no. Because of X.') == "Because of X."
    assert explanation(TASKS["medquad_answer"], " An answer. ") == "An answer."  # open-ended: all of it


def test_augment_rejects_unknown_and_continuous_tasks_before_any_request(all_records, tmp_path):
    for tasks, message in ((["pmdata_fatigeu"], "unknown task 'pmdata_fatigeu'"),
                           (["aw_fb_calories"], "has a continuous label")):  # fmt: skip
        settings = params(data={"datasets": ["aw_fb", "pmdata"]}, augment={"tasks": tasks})
        with pytest.raises(HealthSLMError, match=message):
            augment(settings, all_records, tmp_path / "out", tmp_path / "cache.jsonl", tmp_path / "s.json")
    assert not (tmp_path / "cache.jsonl").exists() and not (tmp_path / "out").exists()


def test_augment_caches_every_response_and_the_gate_checks_the_kept_ones(all_records, tmp_path):
    settings = params(augment={"tasks": ["pubmedqa_answer", "pmdata_fatigue"], "per_task": 3})
    paths = {
        "records_dir": all_records,
        "out_dir": tmp_path / "augmented",
        "cache_file": tmp_path / "cache" / "augment.jsonl",
        "summary_file": tmp_path / "augment.json",
    }
    first = augment(settings, **paths, echo=lambda _: None)
    assert first["http_requests"] == first["new_responses"] == 6 and first["cache_hits"] == 0
    assert first["prompt_tokens"] > 0 and first["completion_tokens"] > 0
    assert len((tmp_path / "cache" / "augment.jsonl").read_text().splitlines()) == 6
    kept = read_augmented(tmp_path / "augmented")
    rejected = [json.loads(line) for line in (tmp_path / "augmented" / "rejected.jsonl").open()]
    generated_kept = sum(first["accepted"].get(k, 0) for k in ("pubmedqa_answer", "pmdata_fatigue"))
    assert generated_kept + sum(r["provider"] != "gpt-3.5-turbo" for r in rejected) == 6
    assert first["imported"] == 1003 + 2837  # DR + Dreaddit train explanations
    for rows in kept.values():
        assert all(str(row["stated_label"]) == str(row["label"]) for row in rows)
        assert all(row["augmentation"]["provider"] for row in rows)
    assert all(row["reason"] for row in rejected)
    assert (tmp_path / "augmented" / "dreaddit" / "stress.train.toon").exists()
    # The records explained are the ones training takes first; before issue 30, the first in file order.
    for key in ("pubmedqa_answer", "pmdata_fatigue"):
        spec = all_tasks()[key]
        train = read_records(all_records, spec.dataset, spec.name, "train")
        drawn = [record["id"] for record in training_order(train, spec, settings)[:3]]
        explained = [row["record_id"] for row in kept.get(key, [])]
        explained += [row["id"] for row in rejected if row["task"] == key]
        assert sorted(explained) == sorted(drawn) and drawn != [record["id"] for record in train[:3]], key

    again = augment(settings, **paths, echo=lambda _: None)
    assert again["http_requests"] == 0 and again["cache_hits"] == 6 and again["cache_hit_rate"] == 1.0
    assert again["accepted"] == first["accepted"] and again["all_prompt_tokens"] == first["prompt_tokens"]

    docs = tmp_path / "docs"
    suites = validate_augmented(
        settings, tmp_path / "augmented", docs, tmp_path / "gate.json", echo=lambda _: None
    )
    assert "augmented.dreaddit_stress" in suites and (docs / "index.html").exists()
    # Negative control: a record whose stated label contradicts its gold label fails the gate.
    stress = tmp_path / "augmented" / "dreaddit" / "stress.train.jsonl"
    rows = [json.loads(line) for line in stress.open()]
    rows[0]["stated_label"] = "no" if rows[0]["label"] == "yes" else "yes"
    stress.write_text("".join(json.dumps(row) + "\n" for row in rows))
    with pytest.raises(HealthSLMError, match="expect_column_pair_values_to_be_equal"):
        validate_augmented(
            settings, tmp_path / "augmented", docs, tmp_path / "gate.json", echo=lambda _: None
        )


def _project(tmp_path: Path, all_records: Path, per_task: int, max_tokens: int = 160) -> Path:
    project = tmp_path / "project"
    (project / "artifacts").mkdir(parents=True)
    shutil.copytree(all_records / "pubmedqa", project / "artifacts" / "records" / "pubmedqa")
    augment = {"tasks": ["pubmedqa_answer"], "per_task": per_task, "max_tokens": max_tokens}
    raw = {"data": {"datasets": ["pubmedqa"]}, "augment": augment | {"endpoint": {"concurrency": 1}}}
    (project / "params.yaml").write_text(yaml.safe_dump(raw))
    return project


def _cache_lines(project: Path) -> int:
    cache = project / "artifacts" / "llm_cache" / "augment.jsonl"
    return len(cache.read_text().splitlines()) if cache.exists() else 0


def test_killed_augmentation_resumes_with_only_the_missing_requests(all_records, tmp_path):
    total = 6
    # Short answers (a truncated one is cached and counted like any): resuming does not depend on length.
    project = _project(tmp_path, all_records, total, max_tokens=48)
    env = {**os.environ, **SECRETS}
    command = [sys.executable, "-m", "healthslm", "augment"]
    process = subprocess.Popen(
        command, cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 240
    while _cache_lines(project) < 2 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    server = [
        p for p in psutil.Process(process.pid).children(recursive=True) if "llama_cpp.server" in p.cmdline()
    ]
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert server, "the stage should have started a llama.cpp server"
    psutil.wait_procs(server, timeout=15)
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in server), (
        "server outlived its stage"
    )
    done = _cache_lines(project)
    assert 2 <= done < total
    assert not (project / "reports" / "augment.json").exists()  # nothing half-written

    rerun = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    summary = json.loads((project / "reports" / "augment.json").read_text())
    print(f"killed after {done}/{total} cached responses; resume: {summary['http_requests']} HTTP requests, "
          f"{summary['cache_hits']} cache hits")  # fmt: skip
    assert summary["http_requests"] == summary["new_responses"] == total - done
    assert summary["cache_hits"] == done and _cache_lines(project) == total
    written = [p for p in project.rglob("*") if p.is_file()]
    for path in written:
        text = path.read_text(errors="ignore")
        assert not any(secret in text for secret in SECRETS.values()), path


def _non_loopback_address() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing interface
        except OSError:
            return None
        address = probe.getsockname()[0]
    return None if address.startswith("127.") else address


def test_a_remote_endpoint_is_refused_before_anything_is_sent(all_records, tmp_path):
    address = _non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address to listen on")
    listener = socket.create_server(("0.0.0.0", 0))
    listener.settimeout(0.5)
    base_url = f"http://{address}:{listener.getsockname()[1]}/v1"

    def attempt(allow_remote: bool) -> str:
        endpoint = {"base_url": base_url, "model": "gpt-4o-mini", "allow_remote": allow_remote,
                    "max_retries": 0, "timeout_s": 2}  # fmt: skip
        raw = {"augment": {"tasks": ["pubmedqa_answer"], "per_task": 1, "endpoint": endpoint}}
        with pytest.raises(HealthSLMError) as error:
            settings = parse_params(raw, datasets=False)  # the schema refuses it before any stage runs
            augment(settings, all_records, tmp_path / "out", tmp_path / "cache.jsonl", tmp_path / "s.json")
        return str(error.value)

    def connections() -> int:
        count = 0
        while True:
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                return count
            connection.close()
            count += 1

    os.environ["OPENAI_API_KEY"] = SECRETS["OPENAI_API_KEY"]
    try:
        refused = attempt(allow_remote=False)
        assert "not on this machine" in refused and "allow_remote: true" in refused
        assert connections() == 0
        # Control: with the opt-in the same request does reach the listener (which is no OpenAI server).
        assert "failed after retries" in attempt(allow_remote=True)
        assert connections() >= 1
    finally:
        os.environ.pop("OPENAI_API_KEY")
        listener.close()


def _predictions(tmp_path: Path, all_records: Path, count: int) -> Path:
    eval_rows = [json.loads(line) for line in (all_records / "medquad" / "answer.eval.jsonl").open()][:count]
    answers = [
        "Drink fluids, rest, and see a doctor if the fever lasts more than three days.",
        "I don't know.",
    ]
    rows = [
        {"id": row["id"], "answer": answers[i % 2], "reference": row["output"][:600]}
        for i, row in enumerate(eval_rows)
    ]
    folder = tmp_path / "predictions" / "base" / "zs"
    folder.mkdir(parents=True)
    (folder / "medquad_answer.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return folder.parent.parent


def test_judge_scores_strict_json_and_reasks_a_malformed_answer_once(all_records, tmp_path):
    predictions = _predictions(tmp_path, all_records, 2)

    def run(max_tokens: int, name: str) -> dict:
        settings = params(eval={"mode": ["zs"], "bootstrap_samples": 100}, judge={"max_tokens": max_tokens})
        return judge(
            settings, predictions, all_records, tmp_path / name, tmp_path / "cache.jsonl",
            tmp_path / f"{name}.json", echo=lambda _: None,
        )  # fmt: skip

    summary = run(120, "ok")
    stats = summary["zs"]["medquad_answer"]
    assert stats["n"] == 2 and stats["failed"] == 0
    assert all(0 <= stats[c] <= 5 and stats[f"{c}_ci_low"] <= stats[c] for c in summary["criteria"])
    rows = [json.loads(line) for line in (tmp_path / "ok" / "zs" / "medquad_answer.jsonl").open()]
    assert all(set(row["scores"]) == set(summary["criteria"]) for row in rows)
    assert summary["usage"]["http_requests"] == 2
    assert run(120, "again")["usage"]["http_requests"] == 0  # answered from the cache

    # Too few tokens for the JSON object: truncated, re-asked once, then recorded as failed.
    failed = run(4, "short")
    assert failed["zs"]["medquad_answer"]["failed"] == 2 and failed["usage"]["http_requests"] == 4
    rows = [json.loads(line) for line in (tmp_path / "short" / "zs" / "medquad_answer.jsonl").open()]
    assert all(row["status"] == "failed" and row["attempts"] == 2 for row in rows)
    assert all(row["reason"] == "truncated at max_tokens" for row in rows)


# --- the loopback rule at the socket, the cache under faults, faults under load ---------------------------


def _fault_augment(tmp_path: Path, all_records: Path, endpoint: dict, tasks=("pubmedqa_answer",), per_task=2):
    settings = params(
        augment={"tasks": list(tasks), "per_task": per_task, "import_existing": False,
                 "endpoint": {"model": "fault-model", "max_retries": 0, "timeout_s": 5, **endpoint}},
    )  # fmt: skip
    return augment(
        settings, all_records, tmp_path / "out", tmp_path / "cache.jsonl", tmp_path / "augment.json",
        echo=lambda _: None,
    )  # fmt: skip


def test_a_local_endpoint_gets_no_proxy_no_redirect_and_no_provider_key(all_records, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRETS["OPENAI_API_KEY"])
    with fault_endpoint() as server, listener() as (proxy_port, proxy), listener() as (other_port, other):
        for variable in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
            monkeypatch.setenv(variable, f"http://127.0.0.1:{proxy_port}")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        summary = _fault_augment(tmp_path, all_records, {"base_url": server.base_url})
        assert summary["new_responses"] == 2 and server.received == 2
        assert proxy["connections"] == 0  # the records went straight to 127.0.0.1, not through the proxy
        assert server.authorization == {"Bearer not-needed"}  # the provider key stayed home

        server.redirect_to = f"http://127.0.0.1:{other_port}/v1/chat/completions"
        (tmp_path / "cache.jsonl").unlink()
        with pytest.raises(HealthSLMError, match="every request: HTTP 307"):
            _fault_augment(tmp_path, all_records, {"base_url": server.base_url})
        assert other["connections"] == 0 and proxy["connections"] == 0


def test_a_remote_endpoint_refuses_a_redirect_off_its_host(all_records, tmp_path, monkeypatch):
    address = _non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address to listen on")
    monkeypatch.setenv("OPENAI_API_KEY", SECRETS["OPENAI_API_KEY"])
    with fault_endpoint(host="0.0.0.0") as server, listener() as (other_port, other):
        base_url = f"http://{address}:{server.port}/v1"
        server.redirect_to = f"http://127.0.0.1:{other_port}/v1/chat/completions"
        with pytest.raises(HealthSLMError, match=f"refused a redirect from {address} to 127.0.0.1"):
            _fault_augment(tmp_path, all_records, {"base_url": base_url, "allow_remote": True})
        assert server.received >= 1 and other["connections"] == 0
        assert server.authorization == {f"Bearer {SECRETS['OPENAI_API_KEY']}"}  # the opted-in host gets it


def test_a_corrupt_cache_line_costs_only_its_own_response(all_records, tmp_path):
    with fault_endpoint() as server:
        endpoint = {"base_url": server.base_url}
        first = _fault_augment(tmp_path, all_records, endpoint, ("pubmedqa_answer", "dreaddit_stress"), 4)
        assert first["new_responses"] == 8 and first["cache_skipped_lines"] == []
        cache = tmp_path / "cache.jsonl"
        lines = cache.read_text().splitlines(keepends=True)
        lines[2] = lines[2][:30] + "\x00garbage\n"  # a middle line torn by a disk fault
        cache.write_text("".join(lines) + lines[5][:40])  # and a last line cut off by a kill
        again = _fault_augment(tmp_path, all_records, endpoint, ("pubmedqa_answer", "dreaddit_stress"), 4)
        assert (
            again["http_requests"] == again["new_responses"] == 1
        )  # only the unreadable entry is asked again
        assert again["cache_hits"] == 7 and again["cache_skipped_lines"] == [3, 9]
        assert server.received == 9
        third = _fault_augment(tmp_path, all_records, endpoint, ("pubmedqa_answer", "dreaddit_stress"), 4)
        assert third["http_requests"] == 0 and third["cache_skipped_lines"] == [3]  # the torn tail was cut


def test_identical_requests_in_flight_are_sent_once(tmp_path):
    from healthslm.llm import open_client, run_all
    from healthslm.params import Endpoint

    with fault_endpoint() as server:
        endpoint = Endpoint(base_url=server.base_url, model="fault-model", concurrency=8)
        with open_client(endpoint, "augment", tmp_path / "cache.jsonl") as client:
            messages = [{"role": "user", "content": "The correct answer is: yes.\nExplain."}]
            replies = run_all([lambda: client.complete(messages, temperature=0.0)] * 16, 8, "same")
        assert server.received == 1 and sum(not r.cached for r in replies) == 1


def test_augment_and_judge_under_injected_faults_answer_or_list_every_record(all_records, tmp_path):
    tasks, per_task = ("pubmedqa_answer", "dreaddit_stress", "pmdata_fatigue"), 100
    endpoint = {"concurrency": 8, "max_retries": 3, "timeout_s": 1}
    with fault_endpoint(fault_share=0.3, seed=1, hang_s=2) as server:
        summary = _fault_augment(
            tmp_path, all_records, {"base_url": server.base_url, **endpoint}, tasks, per_task
        )
        rejected = [json.loads(line) for line in (tmp_path / "out" / "rejected.jsonl").open()]
        answered = sum(summary["accepted_generated"].values()) + sum(
            not r["reason"].startswith("no response") for r in rejected
        )
        unanswered = [r for r in rejected if r["reason"].startswith("no response")]
        print(
            f"augment: {server.received} requests, faults {dict(server.faults)}, "
            f"{summary['failed_requests']} unanswered after retries: {summary['failed_by_reason']}"
        )
        assert set(server.faults) == set(FAULTS) and sum(server.faults.values()) > 50
        assert answered + len(unanswered) == len(tasks) * per_task  # every record: kept, or listed with why
        assert summary["new_responses"] == answered and summary["failed_requests"] == len(unanswered)
        assert server.duplicate_bills == 0  # no answer was paid for twice
        before = server.received
        again = _fault_augment(
            tmp_path, all_records, {"base_url": server.base_url, **endpoint}, tasks, per_task
        )
        assert again["cache_hits"] >= answered and server.duplicate_bills == 0
        assert server.received - before >= len(unanswered)  # only what was missing is asked again

        predictions = _predictions(tmp_path, all_records, 200)
        settings = params(
            eval={"mode": ["zs"], "bootstrap_samples": 100},
            judge={"endpoint": {"base_url": server.base_url, "model": "fault-model", **endpoint}},
        )
        verdicts = judge(settings, predictions, all_records, tmp_path / "judged", tmp_path / "judge.jsonl",
                         tmp_path / "judge.json", echo=lambda _: None)  # fmt: skip
        rows = [json.loads(line) for line in (tmp_path / "judged" / "zs" / "medquad_answer.jsonl").open()]
        assert len(rows) == 200 and all(r["status"] == "ok" or r["reason"] for r in rows)
        assert verdicts["zs"]["medquad_answer"]["failed"] == sum(r["status"] == "failed" for r in rows)
        assert server.duplicate_bills == 0


def test_the_local_server_outlives_the_thread_that_started_it_not_the_process(tmp_path):
    """The server stops with its stage's process (SIGKILL included: the resume test above), never with the
    thread that started it: PR_SET_PDEATHSIG, set by a `preexec_fn` the parent's threads made unsafe, did."""
    import threading
    from contextlib import ExitStack

    import httpx

    from healthslm.llm import llama_server, local_gguf

    with ExitStack() as stack:
        started: list = []
        starter = threading.Thread(
            target=lambda: started.append(stack.enter_context(llama_server(local_gguf(), "m", 256, 1)))
        )
        starter.start()
        starter.join()
        time.sleep(2)  # the starting thread has ended; a death signal tied to it would have fired by now
        server = started[0]
        assert server.death() is None
        assert httpx.get(f"{server.base_url}/models", timeout=10, trust_env=False).status_code == 200
    assert server.process.poll() is not None  # and it stops with the block that owns it


def test_a_failed_judgement_counts_as_the_lowest_score_not_a_skipped_row():
    """Two answers scored 4 and one the judge failed on: the mean is over all three (it was 4.0, the mean of
    the successes, so a judge failing on hard answers scored higher), and the failure rate sits beside it."""
    from healthslm.judge import CRITERIA, criterion_stats

    ok = {"status": "ok", "scores": dict.fromkeys(CRITERIA, 4)}
    stats = criterion_stats([ok, ok, {"status": "failed", "reason": "no response"}], params())
    assert stats["n"] == 3 and stats["failed"] == 1 and stats["failure_rate"] == pytest.approx(0.3333)
    assert stats["overall"] == pytest.approx(8 / 3, abs=1e-4) and stats["accuracy"] == pytest.approx(
        8 / 3, abs=1e-4
    )
    assert stats["overall_ci_low"] < stats["overall"] < stats["overall_ci_high"]


@pytest.mark.parametrize("entry", ["cli", "stage"])
def test_ctrl_c_in_a_stage_is_one_line_exit_130_and_nothing_partial(all_records, tmp_path, entry):
    """SIGINT (Ctrl-C) while requests are in flight: one line, exit status 130, no traceback, no output or
    temporary folder left, and it returns at once (the hung requests are not waited for)."""
    import http.server
    import threading

    asked = threading.Event()

    class Hang(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_POST(self) -> None:
            asked.set()
            time.sleep(60)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hang)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    project = _project(tmp_path, all_records, 4)
    raw = yaml.safe_load((project / "params.yaml").read_text())
    raw["augment"]["endpoint"] = {"base_url": f"http://127.0.0.1:{server.server_port}/v1", "model": "m"}
    raw["augment"]["endpoint"] |= {"concurrency": 2, "timeout_s": 120, "max_retries": 0}
    (project / "params.yaml").write_text(yaml.safe_dump(raw))
    shutil.copy(ROOT / "dvc.yaml", project / "dvc.yaml")
    command = {
        "cli": [sys.executable, "-m", "healthslm", "augment"],
        "stage": [sys.executable, str(ROOT / "stages" / "augment.py")],
    }[entry]
    try:
        process = subprocess.Popen(
            command, cwd=project, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        assert asked.wait(120), process.communicate()
        process.send_signal(signal.SIGINT)
        started = time.monotonic()
        out, err = process.communicate(timeout=30)
    finally:
        server.shutdown()
    assert time.monotonic() - started < 10
    assert process.returncode == 130, err
    assert "Traceback" not in err + out
    assert err.strip().splitlines()[-1].startswith("interrupted: ")
    assert [line for line in err.splitlines() if line.strip()][-1:] == err.strip().splitlines()[-1:]
    assert not (project / "reports" / "augment.json").exists()
    assert not list(project.rglob(".*.tmp")), "a temporary output was left behind"
