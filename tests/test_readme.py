"""CI proves the README: every command .ci/run executes is written, character for character, in README.md."""

from __future__ import annotations

from tests.conftest import REPO


def ci_commands() -> list[str]:
    lines = (REPO / ".ci" / "run").read_text().splitlines()
    return [ln for ln in lines if ln.strip() and not ln.startswith(("#", "set ", "cd ")) and ln != "python --version"]


def test_ci_runs_the_readme_commands_verbatim():
    readme = (REPO / "README.md").read_text().splitlines()
    commands = ci_commands()
    assert len(commands) == 3  # install and first run; test; regression run and check
    for command in commands:
        assert command in readme, f"{command!r} is run by .ci/run but not written in README.md"
