"""CI proves the README: every command .ci/run executes is written, character for character, in
README.md, and every run command the README shows composes and passes the checks made before training."""

from __future__ import annotations

import re

import pytest

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


def readme_run_commands(doc: str = "README.md") -> list[str]:
    """Each ``python -m vibench ...`` run in ``doc``'s bash blocks (not its ``vibench.*`` tools),
    its continuation lines joined, up to a redirection, ``&&``, ``&`` or a comment."""
    blocks = re.findall(r"```bash\n(.*?)```", (REPO / doc).read_text(), re.S)
    commands = []
    for line in (ln for block in blocks for ln in block.replace("\\\n", " ").splitlines()):
        if (at := line.find("python -m vibench")) >= 0 and not line[at:].startswith("python -m vibench."):
            commands.append(re.split(r"\s+(?:>>|>|&&|&|\||#)", line[at:])[0].strip())
    return commands


def test_the_readme_has_its_run_commands():
    commands = readme_run_commands()
    assert len(commands) >= 15 and "python -m vibench +experiment=aevb_mnist -m latent=2,5,10,20" in commands


@pytest.mark.parametrize("command", readme_run_commands())
def test_readme_run_command_composes_and_passes_the_checks(compose_cfg, command):
    from tests.test_presets import first_job
    from vibench.config_checks import check_config

    check_config(compose_cfg(*first_job(command)))
