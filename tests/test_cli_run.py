"""The CLI end to end: a complete store, COCO export, resume, and clear errors for bad output."""

from __future__ import annotations

import json

import pytest

from sceneforge.floor.frame import FRAME_PASSES

from .helpers import TINY_RECIPE, run_cli, write_recipe


def frame_lines(out):
    return (out / "frames.jsonl").read_text().splitlines()


def file_times(out):
    return {p: p.stat().st_mtime_ns for folder in FRAME_PASSES for p in (out / folder).iterdir()}


@pytest.fixture
def finished_run(tmp_path):
    recipe = write_recipe(tmp_path, TINY_RECIPE)
    out = tmp_path / "out"
    result = run_cli("run", recipe, "-o", out, "-n", "2", "--resolution", "40x32", "--samples", "1", "--seed", "11")
    assert result.returncode == 0, result.stderr
    return recipe, out, result


def test_run_writes_a_complete_store_and_coco(finished_run):
    _, out, result = finished_run
    assert result.stdout.strip() == f"Dataset: {out.resolve()}"
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["recipe"]["seed"] == 11 and meta["resolution"] == [40, 32] and meta["recipe"]["render"]["samples"] == 1
    records = [json.loads(line) for line in frame_lines(out)]
    assert sorted(r["index"] for r in records) == [0, 1]
    for record in records:
        for name, relative in record["files"].items():
            assert (out / relative).is_file(), name
        assert set(record["files"]) == {*FRAME_PASSES, "scene", "usd"}  # run writes the USD scene by default
        assert record["camera"]["width"] == 40 and len(record["camera"]["K"]) == 3
    coco = json.loads((out / "coco" / "annotations.json").read_text())
    assert len(coco["images"]) == 2 and coco["annotations"]
    assert "Rendering" in result.stderr and "2/2" in result.stderr


def test_rerun_skips_finished_frames(finished_run):
    recipe, out, _ = finished_run
    before_lines, before_times = frame_lines(out), file_times(out)
    result = run_cli("run", recipe, "-o", out, "-n", "2", "--resolution", "40x32", "--samples", "1", "--seed", "11")
    assert result.returncode == 0, result.stderr
    assert "Rendered 0 frame(s), 2 already done" in result.stderr
    assert frame_lines(out) == before_lines and file_times(out) == before_times


def test_rerun_completes_exactly_the_missing_frames(finished_run):
    recipe, out, _ = finished_run
    lines = frame_lines(out)
    kept = [line for line in lines if json.loads(line)["index"] == 0]
    # Frame 1 lost its record, and a crash left half a line behind.
    (out / "frames.jsonl").write_text(kept[0] + "\n" + '{"index": 1, "se')
    result = run_cli("render", recipe, "-o", out, "-n", "3", "--resolution", "40x32", "--samples", "1", "--seed", "11")
    assert result.returncode == 0, result.stderr
    assert "truncated last record" in result.stderr
    assert "Rendered 2 frame(s), 1 already done" in result.stderr
    records = [json.loads(line) for line in frame_lines(out)]
    assert records[0]["index"] == 0 and sorted(r["index"] for r in records) == [0, 1, 2]
    # render writes no USD scene without --usd
    assert ["usd" in r["files"] for r in sorted(records, key=lambda r: r["index"])] == [True, False, False]
    assert not (out / "scenes" / "000002.usda").exists()
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["recipe"]["count"] == 3 and meta["counts"] == {"requested": 3, "finished": 3}
    assert not list(out.rglob(".*.tmp"))


def test_run_without_usd_writes_no_usd_scene(tmp_path):
    recipe = write_recipe(tmp_path, TINY_RECIPE)
    out = tmp_path / "out"
    result = run_cli("run", recipe, "-o", out, "-n", "1", "--resolution", "40x32", "--samples", "1", "--no-usd")
    assert result.returncode == 0, result.stderr
    (record,) = [json.loads(line) for line in frame_lines(out)]
    assert "usd" not in record["files"] and (out / record["files"]["scene"]).is_file()
    assert not list(out.rglob("*.usda"))


def test_another_recipe_into_the_same_output_is_refused(finished_run):
    recipe, out, _ = finished_run
    result = run_cli("render", recipe, "-o", out, "-n", "2", "--resolution", "40x32", "--samples", "1", "--seed", "12")
    assert result.returncode == 2
    assert "holds frames of another recipe" in result.stderr and "Traceback" not in result.stderr


def test_export_refuses_non_empty_destination_unless_overwrite(finished_run, tmp_path):
    _, out, _ = finished_run
    dest = tmp_path / "exported"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    refused = run_cli("export", out, "--format", "coco", "-o", dest)
    assert refused.returncode == 2 and "--overwrite" in refused.stderr
    assert (dest / "keep.txt").read_text() == "mine"
    done = run_cli("export", out, "--format", "coco", "-o", dest, "--overwrite")
    assert done.returncode == 0, done.stderr
    assert (dest / "annotations.json").is_file() and not (dest / "keep.txt").exists()


def test_unwritable_output_fails_before_rendering(tmp_path):
    recipe = write_recipe(tmp_path, TINY_RECIPE)
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    result = run_cli("run", recipe, "-o", blocker / "out")
    assert result.returncode == 2
    assert "output folder is not writable" in result.stderr and "Traceback" not in result.stderr


def test_export_of_a_folder_that_is_not_a_store(tmp_path):
    result = run_cli("export", tmp_path, "-o", tmp_path / "dest")
    assert result.returncode == 2 and "not a SceneForge dataset" in result.stderr


def test_help_explains_commands():
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("run", "render", "export", "validate"):
        assert command in result.stdout
    run_help = run_cli("run", "--help").stdout
    for option in ("--count", "--seed", "--resolution", "--samples", "--output"):
        assert option in run_help
