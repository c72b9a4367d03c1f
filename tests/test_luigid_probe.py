"""The luigid engine probed the way its users meet it (defects found by an adversarial probe).

Each test pins one defect found while using ``pipeflow.run(..., local_scheduler=False)``
against a real luigid on 127.0.0.1 (``luigid_server``, started and stopped per test).
"""

from __future__ import annotations

import time

import pipeflow
from pipeflow.events import TaskState


def shared(url: str, **kw):
    return dict(local_scheduler=False, scheduler_url=url, execution_summary=False,
                progress=False, **kw)


def test_waiting_for_a_running_task_does_not_keep_a_core_busy(tmp_path, luigid_server):
    """While the only task runs (its worker slot full), the run loop sleeps, not spins.

    Before the fix the loop woke at once forever (its next "ask luigid" time stayed in the
    past while no slot was free), burning a whole core for the task's length (and, with
    the thread executor, competing with the task for the GIL).
    """

    class Slow(pipeflow.tasks.TaskPickle):
        def run(self):
            time.sleep(2.0)
            self.save(1)

    for executor in ("thread", "process"):
        pipeflow.set_dir(tmp_path / executor)
        cpu = time.thread_time()
        result = pipeflow.run(Slow(), executor=executor, **shared(luigid_server.url))
        spent = time.thread_time() - cpu
        assert result.tasks[Slow().task_id].state is TaskState.COMPLETED
        # (the task sleeps 2 s; a loop spinning meanwhile spends about that much CPU)
        assert spent < 0.6, f"{executor}: the run loop used {spent:.2f}s of CPU for a 2s task"
