"""`refine train`, `refine apply` and the refine step of `run` show the same progress as `run` and
`render`: plain `progress:` lines when standard error is not a terminal (captured here)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from sceneforge.floor.errors import UserError
from sceneforge.refine.model import RefinerConfig
from sceneforge.refine.train import TrainOptions, train

from .helpers import TINY_RECIPE, run_cli, write_recipe

QUIET_HEARTBEAT = {"SCENEFORGE_PROGRESS_SECONDS": "3600"}  # only the deterministic lines, on each tenth
TINY_TRAINING = ("--size", "32", "--width", "4", "--blocks", "1", "--device", "cpu")
DURATION = r"\d+:\d\d:\d\d"




@pytest.fixture
def checkpoint(store, photos, tmp_path) -> Path:
    run = tmp_path / "run"
    train(store.root, photos, run, TrainOptions(steps=1, size=32, config=RefinerConfig(channels=4, blocks=1, disc_channels=4)), "cpu")
    return run


def _progress(stderr: str, unit: str) -> list[tuple[int, int, int]]:
    """(done, total, percent) of each plain progress line, checking each line's whole form."""
    found = []
    for line in stderr.splitlines():
        if line.startswith("progress: "):
            match = re.fullmatch(rf"progress: (\d+)/(\d+) \((\d+)%\), ([\d.]+) {re.escape(unit)}, "
                                 rf"elapsed {DURATION}, eta {DURATION}", line)
            assert match and float(match[4]) > 0, line  # no failed/retries: only rendering has them
            found.append((int(match[1]), int(match[2]), int(match[3])))
    return found


def test_piped_training_prints_plain_progress_lines_and_resumes_counting(store, photos, tmp_path):
    run = tmp_path / "piped"
    first = run_cli("refine", "train", "--store", store.root, "--real", photos, "-o", run, "--steps", "10",
                    *TINY_TRAINING, env=QUIET_HEARTBEAT)
    assert first.returncode == 0, first.stderr
    lines = first.stderr.splitlines()
    assert "Training 10 of 10 step(s), 0 already done" in lines
    assert _progress(first.stderr, "steps/s") == [(n, 10, 10 * n) for n in range(1, 11)]  # a line per tenth
    assert first.stderr.rstrip().endswith("eta 0:00:00")
    assert "\x1b" not in first.stderr and "━" not in first.stderr  # no live display, no escape codes
    assert re.fullmatch(rf"Checkpoint: {re.escape(str((run / 'checkpoint.safetensors').resolve()))} "
                        r"\(step 10, [\d.]+ steps/s on cpu\)\n", first.stdout), first.stdout
    resumed = run_cli("refine", "train", "--store", store.root, "--real", photos, "-o", run, "--steps", "12",
                      *TINY_TRAINING, env=QUIET_HEARTBEAT)
    assert resumed.returncode == 0, resumed.stderr
    assert "Training 2 of 12 step(s), 10 already done" in resumed.stderr.splitlines()
    assert _progress(resumed.stderr, "steps/s") == [(11, 12, 91), (12, 12, 100)]
    assert "(step 12," in resumed.stdout


def test_quiet_training_prints_no_progress(store, photos, tmp_path):
    result = run_cli("refine", "train", "--store", store.root, "--real", photos, "-o", tmp_path / "q", "--steps", "2",
                     *TINY_TRAINING, "-q")
    assert result.returncode == 0, result.stderr
    assert "progress: " not in result.stderr and "Training" not in result.stderr
    assert "(step 2," in result.stdout


def test_piped_apply_prints_plain_progress_lines_and_resumes_counting(store, checkpoint):
    result = run_cli("refine", "apply", "--checkpoint", checkpoint, "--store", store.root, "--device", "cpu",
                     "--batch", "2", env=QUIET_HEARTBEAT)
    assert result.returncode == 0, result.stderr
    assert "Refining 3 of 3 view(s), 0 already done" in result.stderr.splitlines()
    assert _progress(result.stderr, "img/s") == [(1, 3, 33), (2, 3, 66), (3, 3, 100)]
    assert result.stderr.rstrip().endswith("eta 0:00:00")
    assert result.stdout == f"Refined 3 frame(s): {(store.root / 'rgb_refined').resolve()}; 0 rejected by the acceptance check\n"
    (store.root / "rgb_refined" / "000001.png").unlink()  # as if killed before this frame
    again = run_cli("refine", "apply", "--checkpoint", checkpoint, "--store", store.root, "--device", "cpu",
                    env=QUIET_HEARTBEAT)
    assert again.returncode == 0, again.stderr
    assert "Refining 1 of 3 view(s), 2 already done" in again.stderr.splitlines()
    assert _progress(again.stderr, "img/s") == [(3, 3, 100)]
    assert again.stdout.startswith("Refined 1 frame(s): ")


@pytest.mark.parametrize("command", ["train", "apply"])
def test_a_bad_progress_period_is_a_user_error_for_refine_commands(command, store, photos, tmp_path):
    args = (("train", "--store", store.root, "--real", photos, "-o", tmp_path / "r", "--steps", "1", *TINY_TRAINING)
            if command == "train" else ("apply", "--checkpoint", tmp_path / "r", "--store", store.root))
    if command == "apply":
        train(store.root, photos, tmp_path / "r", TrainOptions(steps=1, size=32, config=RefinerConfig(channels=4, blocks=1, disc_channels=4)), "cpu")
    result = run_cli("refine", *args, env={"SCENEFORGE_PROGRESS_SECONDS": "soon"})
    assert result.returncode == 2
    assert "SCENEFORGE_PROGRESS_SECONDS='soon': expected a number of seconds > 0" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (store.root / "rgb_refined").exists()


def test_a_piped_run_with_a_refiner_prints_refining_progress_between_render_and_export(checkpoint, tmp_path):
    shutil.copytree(checkpoint, tmp_path / "recipes" / "refiner")
    recipe = write_recipe(tmp_path / "recipes", TINY_RECIPE + "refine: {checkpoint: refiner, device: cpu}\n")
    result = run_cli("run", recipe, "-o", tmp_path / "out", "-n", "2", "--resolution", "32x24", "--samples", "1",
                     "--threads", "1", env=QUIET_HEARTBEAT)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    refining = lines.index("Refining 2 of 2 view(s), 0 already done")
    assert lines.index("Rendering 2 of 2 view(s), 0 already done") < refining
    assert [line.split(",")[0] for line in lines[refining + 1:refining + 3]] == ["progress: 1/2 (50%)",
                                                                                 "progress: 2/2 (100%)"]
    assert "failed" not in lines[refining + 2]  # the refining line, not a rendering one
    assert any(line.startswith("Exported COCO: ") for line in lines[refining + 3:])


@pytest.fixture
def four_frames(tmp_path) -> Path:
    """A 4-frame store (evaluation needs 4) with a short side of 60 px (the SWD pyramid needs 56)."""
    out = tmp_path / "four"
    result = run_cli("render", write_recipe(tmp_path, TINY_RECIPE), "-o", out, "-n", "4", "--resolution", "80x60",
                     "--samples", "1", "--threads", "1", "-q")
    assert result.returncode == 0, result.stderr
    return out


def test_piped_eval_prints_progress_of_its_frames_then_each_measurement(four_frames, photos, checkpoint, capsys, monkeypatch):
    from sceneforge import cli_refine
    from sceneforge.refine import evaluate

    monkeypatch.setattr(evaluate, "two_sample_accuracy", lambda *a, **k: 0.5)  # trains a CNN: 25 s on two cores
    monkeypatch.setenv("SCENEFORGE_PROGRESS_SECONDS", "3600")
    cv2.imwrite(str(photos / "p3.jpg"), np.full((100, 120, 3), 128, np.uint8))  # evaluation needs 4 photos
    defaults = dict(count=200, inception_weights=None, output=None, device="cpu", seed=0, quiet=False)
    cli_refine.evaluate(four_frames, photos, checkpoint=checkpoint, **defaults)
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert lines[0] == "Refining 4 frame(s)"
    assert _progress(err, "img/s") == [(n, 4, 25 * n) for n in range(1, 5)]
    assert lines[5:] == ["Measuring: sliced Wasserstein distance", "Measuring: two-sample classifier",
                         "Measuring: label validity"]
    assert "frames: 4" in out.splitlines() and "two_sample_accuracy: render 0.5  refined 0.5" in out.splitlines()
    with pytest.raises(UserError, match="no refined frames yet"):  # checked before any progress line
        cli_refine.evaluate(four_frames, photos, checkpoint=None, **defaults)
    assert capsys.readouterr().err == ""
    assert run_cli("refine", "apply", "--checkpoint", checkpoint, "--store", four_frames, "--device", "cpu", "-q").returncode == 0
    cli_refine.evaluate(four_frames, photos, checkpoint=None, **{**defaults, "quiet": True})
    assert capsys.readouterr().err == ""  # --quiet: neither progress nor measurement lines
    cli_refine.evaluate(four_frames, photos, checkpoint=None, **defaults)
    err = capsys.readouterr().err
    assert err.splitlines()[0] == "Reading 4 refined frame(s)" and len(_progress(err, "img/s")) == 4
