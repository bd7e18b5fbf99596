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


def run_job(workflow: str, clone: Path, context: dict, env: dict, start: str | None = None, until=None):
    """Run the workflow's only job in `clone`; return the names of the steps that ran."""
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
            assert result.returncode == 0, f"step {name!r} failed:\n{result.stdout[-3000:]}\n{result.stderr}"
        ran.append(name)
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
    """checkout: the clone is made with full history before the job; setup-python, cache: this Python."""


STAND_INS = {
    "actions/checkout": _nothing,
    "actions/setup-python": _nothing,
    "actions/cache": _nothing,
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


def _context(mirror_url: str, api, fork: bool = False) -> dict:
    head = "someone/healthslm" if fork else REPO
    event = {"number": 7, "pull_request": {"number": 7, "head": {"repo": {"full_name": head}}}}
    owner, name = REPO.split("/")
    event["repository"] = {"full_name": REPO, "name": name, "owner": {"login": owner}}
    return {
        "github": {"event": event, "base_ref": "main", "repository": REPO, "run_id": "4242"},
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


def _small_params(project: Path, model: Path) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["model"] = str(model)
    params["data"]["datasets"] = ["pubmedqa"]
    params["eval"] |= {"limit": 3, "bootstrap_samples": 100, "mode": ["zs", "ft"]}
    params["train"] |= {"examples_per_task": 2, "max_steps": 2, "merge": False}
    params["augment"] |= {"tasks": ["pubmedqa_answer"], "per_task": 1}
    params["export"] |= {"quantizations": ["q4_0"], "bench_prompts": 1, "bench_new_tokens": 2}
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_pr_workflow_keeps_one_comment_comparing_like_with_like(
    tmp_path, project, mirror_url, tiny_model_dir, github_api
):
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "HEALTHSLM_DATA_MIRROR": mirror_url}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    for name in (".github", "README.md", "setup.sh"):
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy)(ROOT / name, project / name)
    _small_params(project, tiny_model_dir)

    def sh(*command: str) -> None:
        started_at = time.perf_counter()
        result = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True)
        print(f"{time.perf_counter() - started_at:7.1f} s  {' '.join(command)[:80]}")
        assert result.returncode == 0, f"{command}:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"

    # The base branch: the pipeline run at its committed params, its outputs in a DVC remote.
    sh("git", "init", "-q", "-b", "main")
    sh("git", "config", "user.email", "dev@example.org")
    sh("git", "config", "user.name", "dev")
    sh("dvc", "init", "-q")
    sh("dvc", "remote", "add", "-d", "store", str(tmp_path / "dvc-remote"))
    sh("healthslm", "fetch")
    sh("dvc", "add", "-q", "data")
    sh("git", "add", "-A")
    sh("git", "commit", "-q", "-m", "data")  # DVCLive reads the git revision: the repository needs a commit
    sh("dvc", "repro")
    sh("dvc", "push", "-q")
    sh("git", "add", "-A")
    sh("git", "commit", "-q", "-m", "base")
    origin = tmp_path / "origin.git"
    _git(tmp_path, "clone", "-q", "--bare", str(project), str(origin))
    sh("git", "remote", "add", "origin", str(origin))
    sh("git", "checkout", "-q", "-b", "feature")

    for push in (1, 2):  # two pushes to one pull request, each run in a clean clone as GitHub would
        (project / "README.md").write_text(f"{(project / 'README.md').read_text()}\nPush {push}.\n")
        sh("git", "commit", "-q", "-am", f"push {push}")
        sh("git", "push", "-q", "origin", "feature")
        clone = tmp_path / f"run-{push}" / "clone"
        clone.parent.mkdir()
        _git(tmp_path, "clone", "-q", "--branch", "feature", str(origin), str(clone))
        context = _context(mirror_url, github_api)
        job_env = {"DVC_SITE_CACHE_DIR": str(tmp_path / "site"), "GITHUB_STEP_SUMMARY": str(clone / "s")}
        ran = run_job("pr-metrics.yml", clone, context, job_env)
        assert "Post or update the PR comment" in ran
        assert "No comment on a pull request from a fork" not in ran
        assert (clone.parent / "artifacts" / "comparison" / "comparison.html").is_file()

    assert len(github_api.comments) == 1, github_api.comments
    assert [c.split()[0] for c in github_api.calls] == ["GET", "POST", "GET", "PATCH"]
    body = github_api.comments[0]["body"]
    assert body.startswith("<!-- healthslm-compare -->") and "run 4242" in body
    assert "No parameter changed." in body  # the same params on both sides
    rows = [line.split(" | ") for line in body.splitlines() if line.startswith("| zs | pubmedqa_answer |")]
    assert rows and all(row[4].split(" [")[0] == row[3] != "—" for row in rows), rows  # base == head here

    # A fork's pull request: a read-only token, so no comment; the summary says why.
    fork = _context(mirror_url, github_api, fork=True)
    summary = clone.parent / "fork-summary"
    only_the_end = {"start": "Post or update the PR comment"}
    ran = run_job("pr-metrics.yml", clone, fork, {"GITHUB_STEP_SUMMARY": str(summary)}, **only_the_end)
    assert ran == ["No comment on a pull request from a fork"]
    assert "comes from a fork" in summary.read_text() and len(github_api.calls) == 4
