"""The built-in task that records the machine a flow ran on."""

from __future__ import annotations

from pipeflow.parameters import ChoiceParameter
from pipeflow.sysinfo import RESOURCES, system_info
from pipeflow.tasks import TaskJson


class SystemInfo(TaskJson):
    """A built-in task that saves :func:`system_info` as its JSON output.

    Add it to a flow to keep, next to the results, a record of the machine that made them.
    Like any task it runs once: reset it (or force it) to take a new reading.

    Attributes:
        resource: ``'all'`` (default), ``'cpu'``, ``'memory'`` or ``'disk'``.

    Example:
        >>> flow = pipeflow.Workflow(pipeflow.SystemInfo, {"resource": "memory"})
        >>> flow.run()                                   # doctest: +SKIP
        >>> flow.outputLoad()["total"]                   # doctest: +SKIP
        33370968064
    """

    resource = ChoiceParameter(choices=list(RESOURCES), default="all")

    def run(self) -> None:
        """Read the system information and save it."""
        self.save(system_info(self.resource))
