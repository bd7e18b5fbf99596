"""The workflow files themselves, run step by step in clean clones: ci.yml up to its test step (which is this
suite), and pr-metrics.yml on two pushes to one pull request.

Every `run:` step runs as GitHub runs it (bash -eo pipefail, the workflow's env, `${{ }}` filled in). What
only GitHub has is stood in for: checkout = a clone with full history, setup-python and cache = this Python,
a step that installs = this suite's environment, upload-artifact = a copy, github-script = node running the
workflow's own script with @actions/github against a fake of the GitHub REST API on 127.0.0.1, and GitHub's
raw files and archives = the loopback server the other tests fetch from.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

NODE_MODULES = Path(sys.prefix) / "npm" / "node_modules"
REPO = "healthslm/healthslm"
GITHUB_SCRIPT = """
const core = require('@actions/core');
const { getOctokit, context } = require('@actions/github');
const github = getOctokit(process.env.GITHUB_TOKEN);
const AsyncFunction = Object.getPrototypeOf(async () => {}).constructor;
const script = require('fs').readFileSync(process.argv[1], 'utf8');
new AsyncFunction('require', 'github', 'context', 'core', script)(require, github, context, core)
  .catch((error) => { console.error(error.message); process.exit(1); });
"""


# --- `${{ }}` expressions: the subset the workflows use ---------------------------------------------------
def _value(expr: str, context: dict):
    expr = expr.strip()
    if match := re.fullmatch(r"(.+?)\s*(==|!=)\s*(.+)", expr):
        equal = _value(match[1], context) == _value(match[3], context)
        return equal if match[2] == "==" else not equal
    if expr.startswith("hashFiles("):
        return "0" * 64
    if expr.startswith("'"):
        return expr.strip("'")
    value = context
    for part in expr.split("."):
        value = value.get(part, "") if isinstance(value, dict) else ""
    return value


def _fill(text: str, context: dict) -> str:
    return re.sub(r"\$\{\{(.+?)\}\}", lambda m: str(_value(m[1], context)), str(text))


def run_job(
    workflow: str,
    clone: Path,
    context: dict,
    env: dict,
    start: str | None = None,
    until=None,
    logs: dict | None = None,
    fail_at: str | None = None,
):
    """Run the workflow's only job in `clone`; return the names of the steps that ran. `logs` collects each
    run step's output by name; the step named `fail_at` must fail, and the job stops there."""
    jobs = yaml.safe_load((clone / ".github" / "workflows" / workflow).read_text())["jobs"]
    job = next(iter(jobs.values()))
    base_env = {**os.environ, **{k: _fill(v, context) for k, v in job.get("env", {}).items()}, **env}
    base_env |= {"CI": "true", "GITHUB_WORKSPACE": str(clone), "GITHUB_REPOSITORY": REPO}
    ran, started = [], start is None
    for step in job["steps"]:
        name = step.get("name") or step["uses"]
        started = started or name == start
        if not started:
            continue
        if name == until:
            break
        if "if" in step and not _value(step["if"], context):
            continue
        step_env = base_env | {k: _fill(v, context) for k, v in step.get("env", {}).items()}
        if "uses" in step:
            STAND_INS[step["uses"].split("@")[0]](step.get("with", {}), clone, step_env, context)
        elif step["run"].startswith("bash setup.sh"):
            (clone / ".venv").symlink_to(sys.prefix)  # an install step reuses this suite's environment
        else:
            command = ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", _fill(step["run"], context)]
            started_at = time.perf_counter()
            result = subprocess.run(command, cwd=clone, env=step_env, capture_output=True, text=True)
            print(f"{time.perf_counter() - started_at:7.1f} s  {workflow}: {name}")  # where time goes (-s)
            if logs is not None:
                logs[name] = result.stdout + result.stderr
            if name == fail_at:
                assert result.returncode != 0, f"step {name!r} should have failed:\n{result.stdout[-3000:]}"
                return [*ran, name]
            assert result.returncode == 0, f"step {name!r} failed:\n{result.stdout[-3000:]}\n{result.stderr}"
        ran.append(name)
    for post in context.pop("post", []):  # post-job steps (actions/cache saves)
        post()
    return ran


def _github_script(inputs: dict, clone: Path, env: dict, context: dict) -> None:
    script = clone.parent / "github-script.js"
    script.write_text(_fill(inputs["script"], context))
    event = clone.parent / "event.json"
    event.write_text(json.dumps(context["github"]["event"]))
    env = env | {
        "NODE_PATH": str(NODE_MODULES),
        "GITHUB_EVENT_PATH": str(event),
        "GITHUB_EVENT_NAME": "pull_request",
        "GITHUB_RUN_ID": context["github"]["run_id"],
        "GITHUB_API_URL": context["api_url"],
        "GITHUB_TOKEN": context["token"],
    }
    result = subprocess.run(
        ["node", "-e", GITHUB_SCRIPT, str(script)], cwd=clone, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def _upload_artifact(inputs: dict, clone: Path, env: dict, context: dict) -> None:
    shutil.copytree(clone / inputs["path"], clone.parent / "artifacts" / inputs["name"], dirs_exist_ok=True)


def _nothing(*_) -> None:
    """checkout: the clone is made with full history before the job; setup-python: this Python."""


def _cache(inputs: dict, clone: Path, env: dict, context: dict) -> None:
    """actions/cache: paths in the workspace are restored from the key, else from the newest entry starting
    with a restore key, out of a store that outlives the job (context["cache_store"]), and saved under the key
    when the job ends unless the key itself was hit. Paths in the home folder are this machine's (as setup's
    environment is), so they are neither saved nor restored."""
    paths = [path for path in inputs["path"].split() if not path.startswith("~")]
    if not paths or "cache_store" not in context:
        return
    store, key = Path(context["cache_store"]), _fill(inputs["key"], context)
    entries = sorted(store.iterdir(), key=lambda entry: entry.stat().st_mtime, reverse=True)
    prefixes = [_fill(k, context) for k in inputs.get("restore-keys", "").split()]
    hit = next((e for e in entries if e.name == key), None) or next(
        (e for prefix in prefixes for e in entries if e.name.startswith(prefix)), None
    )
    for path in paths if hit else []:
        if (hit / path).exists():
            shutil.copytree(hit / path, clone / path, dirs_exist_ok=True)
    context.setdefault("restored", []).append(hit.name if hit else None)

    def save() -> None:
        for path in paths:
            if (clone / path).exists():
                shutil.copytree(clone / path, store / key / path, symlinks=True)

    if hit is None or hit.name != key:
        context.setdefault("post", []).append(save)


STAND_INS = {
    "actions/checkout": _nothing,
    "actions/setup-python": _nothing,
    "actions/cache": _cache,
    "actions/upload-artifact": _upload_artifact,
    "actions/github-script": _github_script,
}


# --- a fake of the GitHub REST API's issue comments -------------------------------------------------------
class FakeGitHub(http.server.BaseHTTPRequestHandler):
    comments: list[dict]
    calls: list[str]
    writable_token: str

    def log_message(self, *args) -> None:
        pass

    def _reply(self, status: int, payload) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _body(self) -> dict:
        return json.loads(self.rfile.read(int(self.headers["Content-Length"])))

    def _may_write(self) -> bool:
        return self.headers.get("Authorization", "").split()[-1] == self.writable_token

    def do_GET(self) -> None:
        self.calls.append(f"GET {self.path}")
        if re.fullmatch(rf"/repos/{REPO}/issues/\d+/comments(\?.*)?", self.path):
            return self._reply(200, self.comments)
        self._reply(404, {"message": "Not Found"})

    def do_POST(self) -> None:
        self.calls.append(f"POST {self.path}")
        if not self._may_write():
            return self._reply(403, {"message": "Resource not accessible by integration"})
        comment = {"id": 1000 + len(self.comments), "body": self._body()["body"]}
        comment["user"] = {"login": "github-actions[bot]", "type": "Bot"}
        self.comments.append(comment)
        self._reply(201, comment)

    def do_PATCH(self) -> None:
        self.calls.append(f"PATCH {self.path}")
        match = re.fullmatch(rf"/repos/{REPO}/issues/comments/(\d+)", self.path)
        comment = next((c for c in self.comments if match and c["id"] == int(match[1])), None)
        if comment is None or not self._may_write():
            return self._reply(404 if comment is None else 403, {"message": "no"})
        comment["body"] = self._body()["body"]
        self._reply(200, comment)


@pytest.fixture
def github_api(serve):
    handler = type("Handler", (FakeGitHub,), {"comments": [], "calls": [], "writable_token": "ghs_write"})
    handler.url = serve(None, handler)
    return handler


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def _context(mirror_url: str, api, fork: bool = False, sha: str = "0" * 40) -> dict:
    head = "someone/healthslm" if fork else REPO
    event = {"number": 7, "pull_request": {"number": 7, "head": {"repo": {"full_name": head}}}}
    owner, name = REPO.split("/")
    event["repository"] = {"full_name": REPO, "name": name, "owner": {"login": owner}}
    return {
        "github": {"event": event, "base_ref": "main", "repository": REPO, "run_id": "4242", "sha": sha},
        "secrets": {"HEALTHSLM_DATA_MIRROR": mirror_url},  # stands in for GitHub's raw files and archives
        "api_url": api.url,
        "token": "ghs_read" if fork else "ghs_write",
    }


def test_ci_workflow_up_to_its_test_step_in_a_clean_clone(tmp_path, mirror_url):
    clone = tmp_path / "clone"
    _git(tmp_path, "clone", "-q", str(ROOT), str(clone))
    env = {"HEALTHSLM_DATA_MIRROR": mirror_url}  # stands in for GitHub, which ci.yml fetches from
    ran = run_job("ci.yml", clone, {"github": {}}, env, until="Tests (the README's test command)")
    assert ran[-2:] == ["Set up", "Fetch the data as a user does"]
    assert (clone / "data" / "medquad" / "medquad_answered.jsonl.gz").is_file()
    assert (clone / "data" / "pmdata" / "pmdata_fatigue_eval.json").is_file()


def _saved_shas(origin: Path, pushes: int) -> list[str]:
    """The feature branch's last `pushes` commits, oldest first: one cache entry saved per job."""
    log = _git(origin, "log", "--format=%H", f"-{pushes}", "feature").split()
    return sorted(log, key=log.index, reverse=True)


def _seed_cache_entry(store: Path, project: Path, name: str) -> None:
    """An actions/cache entry as pr-metrics.yml's last two steps leave one: DVC's cache, with the run's
    dvc.lock and git-tracked reports in .dvc/cache/pr-run (here: the base branch's run, as another pull
    request at the base commit would have saved it)."""
    cache = store / name / ".dvc" / "cache"
    shutil.copytree(project / ".dvc" / "cache", cache, symlinks=True)
    (cache / "pr-run").mkdir()
    shutil.copy(project / "dvc.lock", cache / "pr-run" / "dvc.lock")
    shutil.copytree(project / "reports", cache / "pr-run" / "reports")


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_pr_workflow_keeps_one_comment_comparing_like_with_like(tmp_path, small_run, mirror_url, github_api):
    # The base branch: the shared small run, committed at its params. No DVC remote (the common case): the
    # job carries DVC's cache between its runs instead.
    project = small_run.copy(tmp_path / "project")

    origin = tmp_path / "origin.git"
    _git(tmp_path, "clone", "-q", "--bare", str(project), str(origin))
    _git(project, "remote", "add", "origin", str(origin))
    _git(project, "checkout", "-q", "-b", "feature")

    store = tmp_path / "actions-cache"
    store.mkdir()
    seeded = f"dvc-cache-3-{_git(project, 'rev-parse', 'main').strip()}"  # pull request 3, at the base
    _seed_cache_entry(store, project, seeded)
    ran_stages = {}
    for push in (1, 2):  # two pushes to one pull request, each run in a clean clone as GitHub would
        (project / "README.md").write_text(f"{(project / 'README.md').read_text()}\nPush {push}.\n")
        if push == 2:  # a change that only the on-device benchmark (and the report) reads
            params = yaml.safe_load((project / "params.yaml").read_text())
            params["export"]["bench_new_tokens"] = 3
            (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        _git(project, "commit", "-q", "-am", f"push {push}")
        _git(project, "push", "-q", "origin", "feature")
        clone = tmp_path / f"run-{push}" / "clone"
        clone.parent.mkdir()
        _git(tmp_path, "clone", "-q", "--branch", "feature", str(origin), str(clone))
        context = _context(mirror_url, github_api, sha=_git(clone, "rev-parse", "HEAD").strip())
        context["cache_store"] = store
        job_env = {"DVC_SITE_CACHE_DIR": str(clone.parent / "site"), "GITHUB_STEP_SUMMARY": str(clone / "s")}
        logs: dict = {}
        ran = run_job("pr-metrics.yml", clone, context, job_env, logs=logs)
        assert "Post or update the PR comment" in ran
        assert "No comment on a pull request from a fork" not in ran
        assert (clone.parent / "artifacts" / "comparison" / "comparison.html").is_file()
        assert "No DVC remote is configured" in (clone / "s").read_text()  # said once, in the summary
        reproduce = logs["Reproduce at the committed params"]
        ran_stages[push] = set(re.findall(r"Running stage '([^'@]+)", reproduce))
        (clone.parent / "reproduce.log").write_text(reproduce)
        ran_stages[push] -= set(re.findall(r"Stage '([^'@]+)[^']*' is cached - skipping run", reproduce))
        restored = set(re.findall(r"Stage '([^'@]+)[^']*' (?:is cached|didn't change)", reproduce))
        summary = f"ran {sorted(ran_stages[push])}, restored {sorted(restored)}"
        print(f"push {push}: cache entry {context['restored'][-1]}; {summary}")
        saved = sorted(entry.name for entry in store.iterdir() if entry.name != seeded)
        assert saved == sorted(f"dvc-cache-7-{sha}" for sha in _saved_shas(origin, push))
        # Push 1 has no entry of its own yet: restore key `dvc-cache-` finds another PR's. Push 2: push 1's.
        expected = seeded if push == 1 else f"dvc-cache-7-{_saved_shas(origin, 2)[0]}"
        assert context["restored"][-1] == expected
        assert {"train", "evaluate", "augment", "judge", "export", "validate"} <= restored, restored
    assert ran_stages[1] == set(), ran_stages[1]  # README alone changed: every stage restored
    assert ran_stages[2] == {"ondevice", "report"}, ran_stages[2]  # the carried cache restored the rest

    assert len(github_api.comments) == 1, github_api.comments
    assert [c.split()[0] for c in github_api.calls] == ["GET", "POST", "GET", "PATCH"]
    body = github_api.comments[0]["body"]
    assert body.startswith("<!-- healthslm-compare -->") and "run 4242" in body
    assert "export.bench_new_tokens" in body  # push 2 changed it
    rows = [line.split(" | ") for line in body.splitlines() if line.startswith("| zs | pubmedqa_answer |")]
    assert rows and all(row[4].split(" [")[0] == row[3] != "—" for row in rows), rows  # base == head here

    # A fork's pull request: a read-only token, so no comment; the summary says why.
    fork = _context(mirror_url, github_api, fork=True)
    summary = clone.parent / "fork-summary"
    only_the_end = {"start": "Post or update the PR comment"}
    ran = run_job("pr-metrics.yml", clone, fork, {"GITHUB_STEP_SUMMARY": str(summary)}, **only_the_end)
    assert ran == ["No comment on a pull request from a fork"]
    assert "comes from a fork" in summary.read_text() and len(github_api.calls) == 4


def test_the_pr_jobs_pull_fails_on_a_failing_remote_and_restores_from_a_working_one(tmp_path, serve):
    """The pull step alone, in a clone whose DVC remote works (the tracked file comes back), then fails (a
    server that answers 500): the job fails, where `dvc pull || true` went on without a word."""
    repo, remote = tmp_path / "repo", tmp_path / "remote"
    dvc = str(Path(sys.executable).with_name("dvc"))  # this suite's DVC, whether or not its venv is on PATH
    repo.mkdir()
    for command in (
        ["git", "init", "-q"],
        [dvc, "init", "-q"],
        [dvc, "remote", "add", "-d", "store", str(remote)],
    ):
        subprocess.run(command, cwd=repo, check=True, capture_output=True)
    (repo / "data.txt").write_text("a tracked output\n")
    shutil.copytree(ROOT / ".github", repo / ".github")
    for command in ([dvc, "add", "-q", "data.txt"], [dvc, "push", "-q"], ["git", "add", "-A"]):
        subprocess.run(command, cwd=repo, check=True, capture_output=True)
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "tracked")
    clone = tmp_path / "clone"
    _git(tmp_path, "clone", "-q", str(repo), str(clone))
    (clone / ".venv").symlink_to(sys.prefix)
    steps = {
        "start": "Pull cached outputs when a DVC remote is configured",
        "until": "Reproduce at the committed params",
    }
    env = {"GITHUB_STEP_SUMMARY": str(tmp_path / "summary"), "DVC_SITE_CACHE_DIR": str(tmp_path / "site")}
    assert run_job("pr-metrics.yml", clone, {"github": {}}, env, **steps) == [steps["start"]]
    assert (clone / "data.txt").read_text() == "a tracked output\n"

    class Failing(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            self.send_error(500)

        do_HEAD = do_POST = do_GET

    (clone / "data.txt").unlink()
    shutil.rmtree(clone / ".dvc" / "cache", ignore_errors=True)
    subprocess.run([dvc, "remote", "modify", "store", "url", serve(None, Failing)], cwd=clone, check=True)
    logs: dict = {}
    run_job("pr-metrics.yml", clone, {"github": {}}, env, **steps, logs=logs, fail_at=steps["start"])
    assert "::error::The DVC remote gave none of the files" in logs[steps["start"]]
    assert not (clone / "data.txt").exists()
