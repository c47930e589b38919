"""Run in a client's own interpreter by tests/test_clients.py: ``python -I -S isolated.py FOLDER
SCRIPT ARGS...`` puts only FOLDER (with its .pth files) beside the standard library on sys.path,
checks that numpy comes from FOLDER, then runs SCRIPT with ARGS. ``-I -S`` keep the venv's
site-packages (numpy < 2 for bpy), PYTHONPATH and the working directory off the path."""

import runpy
import site
import sys
from pathlib import Path

folder, script, *args = sys.argv[1:]
site.addsitedir(folder)
import numpy  # noqa: E402  (only now, from FOLDER)

if not Path(numpy.__file__).is_relative_to(folder):
    sys.exit(f"numpy came from {numpy.__file__}, not from {folder}")
sys.argv = [script, *args]
runpy.run_path(script, run_name="__main__")
