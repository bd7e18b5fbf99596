"""The README's two commands exist, and .ci/run runs exactly the README's test command."""

import re

from tests.conftest import ROOT


def _commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Two commands", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", section)


def test_two_commands_and_ci_runs_the_test_one():
    main, tests = _commands()
    assert "dvc repro" in main and "setup.sh" in main
    assert "pytest" in tests and "setup.sh --dev" in tests
    ci = [line for line in (ROOT / ".ci/run").read_text().splitlines() if line and not line.startswith("#")]
    assert ci[-1] == tests
