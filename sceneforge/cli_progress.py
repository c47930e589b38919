"""Progress for the CLI (rendering, refiner training, refining): a live rich display in a
terminal, plain lines everywhere else."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from typing import Callable

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from sceneforge.floor.errors import UserError

PERIOD_VARIABLE = "SCENEFORGE_PROGRESS_SECONDS"
DEFAULT_PERIOD = 10.0


@dataclass(frozen=True)
class Work:
    """What a progress display counts: the verb of its first line, the things counted, the rate's
    unit, and whether the work has worker states, retries and failures (rendering does)."""

    verb: str
    things: str
    rate: str
    failures: bool = False
    resumes: bool = True  # the first line says how many were done before


RENDERING = Work("Rendering", "view(s)", "img/s", failures=True)
TRAINING = Work("Training", "step(s)", "steps/s")
REFINING = Work("Refining", "view(s)", "img/s")
READING = Work("Reading", "refined frame(s)", "img/s", resumes=False)  # refine eval
REFINING_NOW = Work("Refining", "frame(s)", "img/s", resumes=False)  # refine eval --checkpoint


class _RateColumn(ProgressColumn):
    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"-- {self.unit}" if speed is None else f"{speed:.2f} {self.unit}")


class LiveProgress(Progress):
    """The rich progress bar; for rendering, with a line of worker states, retries and failures under it."""

    def __init__(self, console: Console, quiet: bool, work: Work = RENDERING) -> None:
        self.workers: dict[str, str] = {}  # set first: the parent's constructor already renders
        self.retries = 0
        self.failures = 0
        self.work = work
        super().__init__(
            TextColumn(work.verb), BarColumn(), MofNCompleteColumn(), _RateColumn(work.rate),
            TextColumn("elapsed"), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
            console=console, disable=quiet,
        )
        self._task = self.add_task(work.verb, total=None)

    def get_renderables(self):
        yield self.make_tasks_table(self.tasks)
        if self.work.failures:
            states = "  ".join(f"{name}: {state}" for name, state in sorted(self.workers.items()))
            yield Text(f"{states}  retries: {self.retries}  failed: {self.failures}", style="dim")

    def begin(self, total: int, already_done: int) -> None:
        """The work knows its total: ``already_done`` of ``total`` were finished before."""
        self.reset(self._task, total=total, completed=already_done)

    def step(self) -> None:
        """One more finished."""
        self.advance(self._task)

    def note(self, text: str) -> None:
        """Print a line above the display."""
        self.console.print(text, markup=False, highlight=False)


class PlainProgress:
    """Progress as plain lines, for output that is not a terminal (CI, Slurm, a file, a pipe), where a
    live display cannot redraw and would show nothing until the end.

    A line when the run starts, whenever the finished count crosses a tenth of the total, and from a
    heartbeat thread whenever ``period`` seconds passed without a line.
    """

    def __init__(self, console: Console, period: float, clock: Callable[[], float] = time.monotonic,
                 work: Work = RENDERING) -> None:
        self.console, self.period, self.clock, self.work = console, period, clock, work
        self.workers: dict[str, str] = {}
        self.retries = 0
        self.failures = 0
        self.total: int | None = None
        self.done = 0
        self._done_before = 0
        self._started = self._last_line = clock()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._heartbeat = threading.Thread(target=self._beat, daemon=True)

    def __enter__(self) -> PlainProgress:
        self._heartbeat.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._heartbeat.join()

    def begin(self, total: int, already_done: int) -> None:
        """The work knows its total: ``already_done`` of ``total`` were finished before."""
        with self._lock:
            self.total, self.done, self._done_before = total, already_done, already_done
            self._started = self.clock()
            self._emit(f"{self.work.verb} {total - already_done} of {total} {self.work.things}, "
                       f"{already_done} already done" if self.work.resumes else f"{self.work.verb} {total} {self.work.things}")

    def step(self) -> None:
        """One more finished; a line when the count crosses a tenth of the total."""
        with self._lock:
            self.done += 1
            if self.total and self.done * 10 // self.total > (self.done - 1) * 10 // self.total:
                self._emit(self.line())

    def note(self, text: str) -> None:
        """Print a line (a notice, a retry) between the progress lines."""
        with self._lock:
            self.console.print(text, markup=False, highlight=False)

    def tick(self) -> None:
        """The heartbeat: a progress line when ``period`` seconds passed since the last line."""
        with self._lock:
            if self.total is not None and self.clock() - self._last_line >= self.period:
                self._emit(self.line())

    def line(self) -> str:
        """``progress: done/total (percent), rate, elapsed, eta`` and, for rendering, ``failed, retries``."""
        elapsed = self.clock() - self._started
        rendered = self.done - self._done_before
        rate = rendered / elapsed if rendered and elapsed > 0 else None
        left = (self.total or 0) - self.done - self.failures
        eta = "--" if rate is None else _duration(max(left, 0) / rate)
        percent = 100 * self.done // self.total if self.total else 100
        text = (f"progress: {self.done}/{self.total} ({percent}%), "
                + (f"-- {self.work.rate}" if rate is None else f"{rate:.2f} {self.work.rate}")
                + f", elapsed {_duration(elapsed)}, eta {eta}")
        return text + f", failed {self.failures}, retries {self.retries}" if self.work.failures else text

    def _emit(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False)
        self._last_line = self.clock()

    def _beat(self) -> None:
        while not self._stop.wait(min(self.period, 1.0)):
            self.tick()


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def progress_period() -> float:
    """Seconds between heartbeat lines of the plain progress, from SCENEFORGE_PROGRESS_SECONDS."""
    text = os.environ.get(PERIOD_VARIABLE)
    if text is None:
        return DEFAULT_PERIOD
    try:
        period = float(text)
    except ValueError:
        period = float("nan")
    if not period > 0 or period == float("inf"):
        raise UserError(f"{PERIOD_VARIABLE}={text!r}: expected a number of seconds > 0")
    return period


def render_progress(console: Console, quiet: bool, work: Work = RENDERING) -> LiveProgress | PlainProgress:
    """The live display where ``console`` is a terminal (or ``quiet``: none), plain lines otherwise.
    Either takes ``begin(total, already_done)`` and a ``step()`` per thing finished."""
    if quiet or console.is_terminal:
        return LiveProgress(console, quiet, work)
    return PlainProgress(console, progress_period(), work=work)
