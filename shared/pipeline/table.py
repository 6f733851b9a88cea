"""The shape of a job: its steps, what follows each, and the gates the review steps open, declared
once as rows of a `Table` (the rows themselves are in shared/pipeline/steps.py, next to the
functions they run). The runner and the steps ask the table; nothing else spells the order.

A review step opens a gate: ✅ resumes at the row's `then`, 🔁 or an edit goes back to the
gate's `redoes`. A step function answers with `Next`, what happens to the job now.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Callable, Iterator

if TYPE_CHECKING:
    from shared.pipeline.job import JobContext

DONE = "done"
"""The name after the last step: the job has nothing left to run."""


class Next(Enum):
    """What a step function's return tells the runner."""

    CONTINUE = "continue"
    """The step checkpointed and moved the job on (or back): run the job's step now."""
    PARKED = "parked"
    """The job waits, at a gate or for a later run, and holds no lease: stop here."""
    FINISHED = "finished"
    """The job is done: stop here."""


@dataclass(frozen=True)
class Gate:
    """A decision the user takes: `name` is the approval type (APPROVAL_GATES, approval_statuses),
    `redoes` the step a regenerate or an edit at this gate goes back to, and `show` sends the
    message with the gate's buttons (`keyboard`) and returns Telegram's message, or None when
    it moved the job itself: what it shows is gone and the job was sent back to make it again,
    or there is nothing to show and the job went on."""

    name: str
    redoes: str
    show: Callable[["JobContext", dict], dict | None]


@dataclass(frozen=True)
class Step:
    """One row: the step `name`, the function that runs it, the step that follows (for a review
    step: once its gate is approved or switched off), the gate it opens, and the artifact name
    prefixes it saves (a later step that finds them gone sends the job back here)."""

    name: str
    run: Callable[["JobContext"], Next]
    then: str
    opens: Gate | None = None
    makes: tuple[str, ...] = ()


class Table:
    """The rows in order, the first being where a job starts, with the look-ups derived from
    them. Unknown names raise KeyError."""

    def __init__(self, *steps: Step) -> None:
        self.steps = steps
        self._by_name = {step.name: step for step in steps}
        self._review = {step.opens.name: step.name for step in steps if step.opens is not None}
        reviews = sum(step.opens is not None for step in steps)
        if len(self._by_name) != len(steps) or len(self._review) != reviews:
            raise ValueError("a step name or a gate appears twice in the table")

    def __iter__(self) -> Iterator[Step]:
        return iter(self.steps)

    def __getitem__(self, name: str) -> Step:
        return self._by_name[name]

    @property
    def first(self) -> str:
        return self.steps[0].name

    @property
    def gates(self) -> tuple[str, ...]:
        """The gates in the order a job meets them."""
        return tuple(self._review)

    def next_step(self, name: str) -> str:
        return self._by_name[name].then

    def gate_of(self, step: str) -> Gate:
        """The gate review step `step` opens."""
        gate = self._by_name[step].opens
        if gate is None:
            raise KeyError(f"step {step!r} opens no gate")
        return gate

    def review_of(self, gate: str) -> str:
        """The review step that opens `gate` (its checkpoint holds the gate's last revision)."""
        return self._review[gate]

    def step_after_gate(self, gate: str) -> str:
        """Where an approved (or switched off) `gate` resumes the job."""
        return self.next_step(self.review_of(gate))

    def redo_of(self, gate: str) -> str:
        """Where a regenerate or an edit at `gate` sends the job back to."""
        return self.gate_of(self.review_of(gate)).redoes

    def maker_of(self, prefix: str) -> str:
        """The one step that saves the artifacts whose names start with `prefix`."""
        [step] = [step.name for step in self.steps if prefix in step.makes]
        return step

    def failure_name(self, step: str) -> str:
        """How the failure notice names `step`: a review step by its gate."""
        opens = self._by_name[step].opens if step in self._by_name else None
        return opens.name if opens is not None else step
