"""The environment a spawned render worker starts with: one OpenBLAS thread unless the user chose."""

from __future__ import annotations

import multiprocessing
import os

from sceneforge.first_worker import worker_environment


def _report(queue) -> None:
    queue.put(os.environ.get("OPENBLAS_NUM_THREADS"))


def _spawned_sees() -> str | None:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_report, args=(queue,))
    with worker_environment():
        process.start()
    try:
        return queue.get(timeout=60)
    finally:
        process.join()


def test_a_worker_gets_one_blas_thread_and_the_conductor_keeps_its_environment(monkeypatch):
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    assert _spawned_sees() == "1"
    assert "OPENBLAS_NUM_THREADS" not in os.environ


def test_a_users_own_blas_threads_are_kept(monkeypatch):
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "3")
    assert _spawned_sees() == "3"
    assert os.environ["OPENBLAS_NUM_THREADS"] == "3"
