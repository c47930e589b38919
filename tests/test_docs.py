"""The README's two commands are the ones CI and users actually run."""

from __future__ import annotations

from .helpers import ROOT


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return [line for line in text.splitlines() if line.startswith("python3.11 -m venv .venv && ")]


def test_readme_has_the_two_commands_and_ci_runs_the_test_one():
    main_job, tests = readme_commands()
    assert "sceneforge run examples/tabletop.yaml" in main_job
    assert tests.endswith("-m pytest")
    assert tests in (ROOT / ".ci" / "run").read_text().splitlines()
    assert (ROOT / "examples" / "tabletop.yaml").is_file()
