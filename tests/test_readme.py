"""README.md stays true: its Quick start is what CI runs."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def quick_start_commands() -> list[str]:
    """Return the commands of README's Quick start code block."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```(?:bash|sh)?\n(.*?)```", section, re.DOTALL).group(1)
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


def test_quick_start_is_two_commands_and_ci_runs_exactly_them():
    commands = quick_start_commands()
    ci_lines = [
        line
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.startswith(("#", "set ", "cd "))
    ]
    assert len(commands) == 2
    assert ci_lines == commands


def test_every_preset_the_readme_names_exists():
    readme = (ROOT / "README.md").read_text()
    named = set(re.findall(r"experiment=(\w+)", readme))
    presets = {path.stem for path in (ROOT / "conf" / "experiment").glob("*.yaml")}
    assert named and named <= presets
