"""Command-line conventions (-h, --version, usage lines, misspelt options), progress without a
terminal, the run summary, and hover help in the recipe schema."""

from __future__ import annotations

import io
import json
import re
from importlib.metadata import version

import pytest
import typer.main
from rich.console import Console

from sceneforge.cli import _summary, app
from sceneforge.cli_progress import PlainProgress
from sceneforge.executors import Failure
from sceneforge.floor.errors import RenderFailure
from sceneforge.labels.store import DatasetStore
from sceneforge.pipeline import RenderReport
from sceneforge.scenes.recipe import load_recipe
from sceneforge.scenes.sampling import sample

from .helpers import ROOT, TINY_RECIPE, run_cli, write_recipe

TINY = ("--resolution", "32x24", "--samples", "1", "--threads", "1", "--seed", "3")
QUIET_HEARTBEAT = {"SCENEFORGE_PROGRESS_SECONDS": "3600"}  # only the deterministic lines, on each tenth


def _command_paths() -> list[tuple[str, ...]]:
    """Every command and subcommand, as the words that name it (the top level is ())."""
    paths: list[tuple[str, ...]] = [()]

    def visit(group, prefix: tuple[str, ...]) -> None:
        for name, command in group.commands.items():
            paths.append((*prefix, name))
            if hasattr(command, "commands"):
                visit(command, (*prefix, name))

    visit(typer.main.get_command(app), ())
    return paths


def _usage_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("Usage:")]


@pytest.fixture(scope="module")
def piped_run(tmp_path_factory):
    """A 4-frame run whose output is captured, so not a terminal."""
    folder = tmp_path_factory.mktemp("piped")
    recipe, out = write_recipe(folder, TINY_RECIPE), folder / "out"
    result = run_cli("run", recipe, "-o", out, "-n", "4", *TINY, env=QUIET_HEARTBEAT)
    assert result.returncode == 0, result.stderr
    return recipe, out, result


def test_every_command_answers_h_and_help_alike_with_usage_lines_without_braces():
    paths = _command_paths()
    assert ("run",) in paths and ("refine", "train") in paths
    for words in paths:
        short, long = run_cli(*words, "-h"), run_cli(*words, "--help")
        assert short.returncode == long.returncode == 0, (words, short.stderr)
        assert short.stdout == long.stdout
        (usage,) = _usage_lines(short.stdout)
        assert "{" not in usage and "}" not in usage, usage
    assert _usage_lines(run_cli("run", "-h").stdout) == ["Usage: python -m sceneforge run [OPTIONS] RECIPE"]


def test_usage_lines_of_errors_have_no_braces():
    for words in (("run",), ("export",), ("preview", "x"), ("refine", "train")):
        result = run_cli(*words)
        assert result.returncode == 2
        usages = _usage_lines(result.stderr)
        assert usages and not any("{" in line or "}" in line for line in usages), result.stderr


def test_version_is_the_package_version():
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout == f"sceneforge {version('sceneforge')}\n"


@pytest.mark.parametrize(("args", "wrong", "meant"), [
    (("run", "recipe.yaml", "-o", "out", "--resolutoin", "64x48"), "--resolutoin", "--resolution"),
    (("--verison",), "--verison", "--version"),
    (("refine", "apply", "--stor", "out"), "--stor", "--store"),
])
def test_a_misspelt_option_suggests_the_right_one(args, wrong, meant, tmp_path):
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert f"No such option: {wrong}; did you mean {meant}?" in result.stderr, result.stderr


def test_an_option_like_no_other_gets_no_suggestion(tmp_path):
    result = run_cli("run", "recipe.yaml", "-o", "out", "--zzzzzz", cwd=tmp_path)
    assert result.returncode == 2
    assert "No such option: --zzzzzz" in result.stderr and "did you mean" not in result.stderr


def test_piped_run_prints_plain_progress_lines_and_a_summary(piped_run):
    _, out, result = piped_run
    lines = result.stderr.splitlines()
    assert "Rendering 4 of 4 view(s), 0 already done" in lines
    progress = [line for line in lines if line.startswith("progress: ")]
    assert len(progress) == 4, result.stderr  # one per tenth crossed: 25, 50, 75, 100 %
    for done, line in enumerate(progress, start=1):
        match = re.fullmatch(r"progress: (\d+)/4 \((\d+)%\), ([\d.]+) img/s, elapsed \d+:\d\d:\d\d, "
                             r"eta (\d+:\d\d:\d\d), failed 0, retries 0", line)
        assert match, line
        assert (int(match[1]), int(match[2])) == (done, 25 * done) and float(match[3]) > 0
    assert progress[-1].endswith("eta 0:00:00, failed 0, retries 0")
    assert not any("\x1b" in line or "━" in line for line in lines)  # no live display, no escape codes
    coco = json.loads((out / "coco" / "annotations.json").read_text())
    assert (f"Exported COCO: {out / 'coco' / 'annotations.json'} ({len(coco['images'])} images, "
            f"{len(coco['annotations'])} annotations)") in lines
    assert len(coco["images"]) == 4 and coco["annotations"]
    assert f"Log: {out / 'logs' / 'run.jsonl'}" in lines and (out / "logs" / "run.jsonl").is_file()
    assert lines.index("Rendering 4 of 4 view(s), 0 already done") < lines.index(progress[0])
    assert result.stdout == f"Dataset: {out.resolve()}\n"


def test_piped_rerun_of_a_finished_store_prints_no_progress_lines(piped_run):
    recipe, out, _ = piped_run
    result = run_cli("render", recipe, "-o", out, "-n", "4", *TINY, env=QUIET_HEARTBEAT)
    assert result.returncode == 0, result.stderr
    assert "Rendering 0 of 4 view(s), 4 already done" in result.stderr
    assert "progress: " not in result.stderr and "Exported" not in result.stderr  # render exports nothing
    assert f"Log: {out / 'logs' / 'run.jsonl'}" in result.stderr


@pytest.mark.parametrize("period", ["0", "-1", "soon", "inf"])
def test_a_bad_progress_period_is_a_user_error(period, tmp_path):
    recipe = write_recipe(tmp_path, TINY_RECIPE)
    result = run_cli("render", recipe, "-o", tmp_path / "out", *TINY, env={"SCENEFORGE_PROGRESS_SECONDS": period})
    assert result.returncode == 2
    assert f"SCENEFORGE_PROGRESS_SECONDS={period!r}: expected a number of seconds > 0" in result.stderr
    assert not (tmp_path / "out" / "frames.jsonl").exists()


def test_preview_of_a_frame_the_store_does_not_hold_is_an_error(piped_run, tmp_path):
    _, out, _ = piped_run
    result = run_cli("preview", out, "-o", tmp_path / "sheet.png", "--frames", "1,7")
    assert result.returncode == 2
    assert "--frames" in result.stderr and "no finished frame 7" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "sheet.png").exists()
    good = run_cli("preview", out, "-o", tmp_path / "sheet.png", "--frames", "1,3")
    assert good.returncode == 0 and (tmp_path / "sheet.png").is_file()


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _plain(period: float = 5.0) -> tuple[PlainProgress, io.StringIO, _Clock]:
    text, clock = io.StringIO(), _Clock()
    return PlainProgress(Console(file=text, soft_wrap=True), period, clock), text, clock


def test_plain_progress_heartbeat_prints_only_after_its_period():
    progress, text, clock = _plain(period=5.0)
    progress.tick()
    assert text.getvalue() == ""  # nothing before the run knows its total
    progress.begin(100, 20)
    assert text.getvalue().splitlines() == ["Rendering 80 of 100 view(s), 20 already done"]
    clock.now += 4.9
    progress.tick()
    assert len(text.getvalue().splitlines()) == 1
    clock.now += 0.1
    progress.tick()
    assert text.getvalue().splitlines()[-1] == ("progress: 20/100 (20%), -- img/s, elapsed 0:00:05, eta --, "
                                                "failed 0, retries 0")
    progress.tick()  # the line just printed restarts the period
    assert len(text.getvalue().splitlines()) == 2


def test_plain_progress_rate_eta_and_failures():
    progress, text, clock = _plain(period=1000.0)
    progress.begin(10, 2)
    for _ in range(2):  # 2 views in 4 s: 0.5 img/s; 10 - 4 done - 1 failed = 5 left: 10 s
        clock.now += 2.0
        progress.step()
    progress.failures, progress.retries = 1, 3
    assert progress.line() == "progress: 4/10 (40%), 0.50 img/s, elapsed 0:00:04, eta 0:00:10, failed 1, retries 3"
    # 2 -> 3 crosses 30 %, 3 -> 4 crosses 40 %: a line each, though the heartbeat period is far off
    assert [line.split(",")[0] for line in text.getvalue().splitlines()[1:]] == ["progress: 3/10 (30%)",
                                                                                 "progress: 4/10 (40%)"]


def test_plain_progress_prints_a_line_on_each_tenth_of_a_large_run():
    progress, text, _ = _plain(period=1000.0)
    progress.begin(1000, 0)
    for _ in range(1000):
        progress.step()
    lines = text.getvalue().splitlines()[1:]
    assert [line.split(" ")[1] for line in lines] == [f"{n}/1000" for n in range(100, 1001, 100)]


def test_summary_lists_failed_views_and_the_log(piped_run, capsys):
    recipe_path, out, _ = piped_run
    recipe = load_recipe(recipe_path, {"count": 4})
    failures = [Failure(sample(recipe, 2), "boom", 3), Failure(sample(recipe, 3), "bang", 3)]
    report = RenderReport(store=DatasetStore(out), requested=4, already_done=0, rendered=2,
                          render_seconds=1.0, wall_seconds=2.0, failures=failures)
    with pytest.raises(RenderFailure) as caught:
        _summary(report, recipe, out, quiet=False)
    assert str(caught.value) == (f"2 frame(s) failed (2, 3); errors in {out / 'failed.jsonl'}; "
                                 "rerun the same command to retry them")
    err = capsys.readouterr().err
    assert "Rendered 2 frame(s), 0 already done" in err and f"Log: {out / 'logs' / 'run.jsonl'}" in err


def _properties_without_description(node, path: str = "#") -> list[str]:
    found = []
    if isinstance(node, dict):
        for name, prop in (node.get("properties") or {}).items():
            if not (isinstance(prop, dict) and isinstance(prop.get("description"), str) and prop["description"].strip()):
                found.append(f"{path}/properties/{name}")
        for key, value in node.items():
            found += _properties_without_description(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _properties_without_description(value, f"{path}/{i}")
    return found


def test_every_schema_property_has_a_description():
    result = run_cli("schema")
    assert result.returncode == 0
    schema = json.loads(result.stdout)
    assert len(schema["$defs"]) > 30  # the walk reaches the definitions
    assert _properties_without_description(schema) == []
    assert _properties_without_description({"properties": {"a": {"type": "int"}}}) == ["#/properties/a"]


def test_the_vs_code_settings_snippet_maps_the_schema_to_the_examples():
    text = (ROOT / "docs" / "recipes.md").read_text()
    (block,) = [b for b in re.findall(r"```json\n(.*?)```", text, re.S) if "yaml.schemas" in b]
    mapping = json.loads(block)["yaml.schemas"]
    (schema, patterns), = mapping.items()
    assert (ROOT / schema).resolve() == (ROOT / "docs" / "recipe.schema.json").resolve()
    examples = sorted((ROOT / "examples").glob("*.yaml"))
    assert examples and all(any(e.relative_to(ROOT).match(p) for p in patterns) for e in examples)
