"""Remote tasks, durable and paid for once (sql/009_remote_tasks.sql, sql/010_remote_stills.sql):
the engine that the step `animate` (a clip per still at Runway or fal, shared/pipeline/animate.py)
and the step `media` (a still per scene with Runway text_to_image, shared/pipeline/media.py) share.

Each submission is preceded by its row (`submitting`), and the handle is recorded the moment the
provider answers (`running`); polling uses recorded handles only, so a later run, on any worker,
resumes where the last one stopped. Every scene is submitted at once, as far as the provider's
slots for the kind allow (ANIMATION_CONCURRENCY for clips, IMAGE_CONCURRENCY for stills: tasks in
flight per provider, across all jobs). A result is downloaded and saved as the job's artifact as
soon as its task succeeds. While tasks run, the engine polls every ANIMATION_POLL_SECONDS as long
as the worker's run has time (`JobContext.deadline`) and no other job is due; then it hands back
`Pending`, and its caller parks the job (`park`: no lease, no attempt counted) so that a later
run, or the same run after the other jobs, polls again.

A task first waits in the provider's line (status 'queued': Runway PENDING or THROTTLED, fal
IN_QUEUE); the first poll that sees it 'running' records when it started, and
ANIMATION_TIMEOUT_SECONDS counts from then only. In a crowd, waiting in line never makes a scene
fall back.

The policy for a submission whose outcome is not known (no answer came back, or a run found its
row still `submitting` because the run that sent it died): the task may be running, and paid for,
at the provider, but its handle is lost, so it is `uncertain` and NEVER submitted again
automatically. Its scene falls back (a clip to its still, a still to a local card), like a task
that failed, was refused, or ran past its timeout (then it is cancelled, best effort); the user is
told which scenes fell back, and only their explicit 🔁 at the gate (a new variant) pays again. A
submission that surely never reached the provider (the connection never opened, a 429) is
`unsent` and submitted again, at most MAX_UNSENT times.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

from shared import queue
from shared.errors import (
    BotError,
    OutcomeUnknown,
    OwnerActionNeeded,
    PermanentError,
    TransientError,
)
from shared.pipeline.job import JobContext
from shared.providers.base import AnimationStatus

log = logging.getLogger(__name__)

MAX_UNSENT = 5
"""Submissions of one scene that may fail before reaching the provider; then it falls back."""


class TaskProvider(Protocol):
    """What the engine asks of a provider besides submitting: a task's status, and its cancel."""

    def status(self, handle: dict) -> AnimationStatus: ...

    def cancel(self, handle: dict) -> None: ...


@dataclass(frozen=True)
class Settled:
    """What became of the scenes: `made`, those with their result saved; `fallback`, those whose
    task failed, timed out, or whose outcome is unknown."""

    made: list[int]
    fallback: list[int]


@dataclass(frozen=True)
class Pending:
    """Tasks are still running: the caller parks the job (`park`) once its own work is saved."""

    tasks: int


@dataclass(frozen=True)
class RemoteWork:
    """One step's tasks at one provider: one per scene, of `key.kind`."""

    provider: TaskProvider
    key: queue.RemoteTaskKey
    scenes: int
    artifact: Callable[[int], str]
    """The artifact that holds a scene's result (its directory is the prefix, e.g. "clip/")."""
    submit: Callable[[int], dict]
    """Send a scene's task; its handle."""
    download: Callable[[AnimationStatus, Path], None]
    """Write a succeeded task's result to the path (called from download threads)."""
    cost: str
    """The cost kind metered ("animation", "visuals")."""
    units: Callable[[int], dict[str, float]]
    billed_seconds: Callable[[int], float | None]
    slots: int
    progress: Callable[[int], None]
    """Show how many scenes are ready."""


def settle_stale(ctx: JobContext) -> None:
    """Turn the job's rows an earlier run left `submitting` into `uncertain` (never sent again).
    Run before this run submits anything."""
    for kind, scene in queue.settle_stale_submissions(ctx.db, ctx.job):
        log.warning(
            "remote task outcome unknown job=%s step=%s kind=%s scene=%s: not submitted again",
            ctx.job.id,
            ctx.job.step,
            kind,
            scene,
        )


def should_park(ctx: JobContext, seconds: float) -> bool:
    """True when the run should stop waiting: waiting `seconds` more passes its deadline, or
    another job is due."""
    out_of_time = ctx.deadline is not None and time.monotonic() + seconds >= ctx.deadline
    return out_of_time or queue.others_due(ctx.db, ctx.job.id)


def park(ctx: JobContext, pending: Pending) -> None:
    """Park the job to poll again in ANIMATION_POLL_SECONDS (no lease, no attempt counted)."""
    job = ctx.job
    poll = ctx.settings.animation_poll_seconds
    queue.defer(ctx.db, job, poll, f"{job.step}: waiting for {pending.tasks} remote task(s)")
    log.info(
        "job parked on remote tasks job=%s step=%s pending=%s", job.id, job.step, pending.tasks
    )


def run_remote(
    ctx: JobContext,
    work: RemoteWork,
    directory: Path,
    *,
    idle: Callable[[float], None] = time.sleep,
) -> Settled | Pending:
    """Submit, poll and download the scenes' tasks until every scene has its result saved or
    has fallen back; `Pending` when the job should park to poll again in a later run. `idle`
    waits between polls (the step `media` saves voices meanwhile)."""
    settle_stale(ctx)
    prefix = work.artifact(0).split("/")[0] + "/"
    saved = queue.artifact_names(ctx.db, ctx.job.id, prefix)
    poll = ctx.settings.animation_poll_seconds
    while True:
        tasks = queue.remote_tasks(ctx.db, ctx.job.id, work.key)
        waiting = []
        for scene in range(work.scenes):
            task = tasks.get(scene)
            if task is None or (task["state"] == "unsent" and task["unsent"] < MAX_UNSENT):
                _submit(ctx, work, scene, task["attempt"] + 1 if task else 1)
            elif _waiting(work, task, saved):
                waiting.append(task)
        saved |= _poll(ctx, work, waiting, directory)
        tasks = queue.remote_tasks(ctx.db, ctx.job.id, work.key)
        settled = _settled(work, tasks, saved)
        if settled is not None:
            return settled
        ready = sum(
            tasks[scene]["state"] == "succeeded" and work.artifact(scene) in saved
            for scene in tasks
        )
        work.progress(ready)
        if should_park(ctx, poll):
            return Pending(work.scenes - ready)
        idle(poll)
        ctx.check()


def _waiting(work: RemoteWork, task: dict[str, Any], saved: set[str]) -> bool:
    """A task to ask after: running, or succeeded with its result gone (a cancelled job's
    files)."""
    state = task["state"]
    return state == "running" or (
        state == "succeeded" and work.artifact(task["scene"]) not in saved
    )


def _settled(work: RemoteWork, tasks: dict[int, dict[str, Any]], saved: set[str]) -> Settled | None:
    """The scenes' outcome once none is left to submit or to wait for, else None."""
    made, fallback = [], []
    for scene in range(work.scenes):
        task = tasks.get(scene)
        state = task["state"] if task else None
        if state == "succeeded" and work.artifact(scene) in saved:
            made.append(scene)
        elif state in ("failed", "uncertain") or (
            state == "unsent" and task["unsent"] >= MAX_UNSENT
        ):
            fallback.append(scene)
        else:
            return None
    return Settled(made, fallback)


def _submit(ctx: JobContext, work: RemoteWork, scene: int, attempt: int) -> None:
    """Submit one scene's task when a slot is free: the intent first, the handle the moment the
    provider answers, then its price. What is recorded when no handle comes back decides
    whether it is ever submitted again (see the module's docstring)."""
    job, key = ctx.job, work.key
    units = work.units(scene)
    ctx.meter.check(work.cost, units)
    task_id = queue.begin_remote_task(
        ctx.db,
        job,
        key,
        scene,
        attempt,
        slots=work.slots,
        timeout_seconds=ctx.settings.animation_timeout_seconds,
    )
    if task_id is None:
        return
    context = (
        f"job={job.id} step={job.step} kind={key.kind} scene={scene} provider={key.provider} "
        f"task={task_id}"
    )
    try:
        handle = work.submit(scene)
    except OutcomeUnknown as exc:
        queue.end_remote_task(ctx.db, job, task_id, "uncertain", str(exc))
        log.warning("remote task outcome unknown %s error=%s: not submitted again", context, exc)
        return
    except OwnerActionNeeded as exc:
        queue.end_remote_task(ctx.db, job, task_id, "unsent", str(exc))
        raise
    except TransientError as exc:
        queue.end_remote_task(ctx.db, job, task_id, "unsent", str(exc))
        log.info("remote task not sent %s attempt=%s error=%s", context, attempt, exc)
        return
    except PermanentError as exc:
        queue.end_remote_task(ctx.db, job, task_id, "failed", str(exc))
        log.warning("remote task refused %s error=%s", context, exc)
        return
    usd = ctx.meter.price(work.cost, units)
    billed = work.billed_seconds(scene)
    queue.remote_task_submitted(ctx.db, job, task_id, handle, billed, usd)
    ctx.meter.record(work.cost, units)
    log.info("remote task submitted %s remote_id=%s seconds=%s", context, handle.get("id"), billed)


def _poll(
    ctx: JobContext, work: RemoteWork, waiting: list[dict[str, Any]], directory: Path
) -> set[str]:
    """Ask after the waiting tasks by their recorded handles; record when each starts running;
    download the results of those that succeeded side by side, and save each as the job's
    artifact; end those that failed or ran past ANIMATION_TIMEOUT_SECONDS. Returns the names of
    the artifacts saved."""
    succeeded = []
    for task in waiting:
        try:
            status = work.provider.status(task["handle"])
        except TransientError as exc:
            log.info("remote task not polled %s error=%s", _context(ctx, task), exc)
            _expire(ctx, work, task)
            continue
        except PermanentError as exc:
            _end(ctx, task, "failed", f"status: {exc}")
            continue
        if status.state == "succeeded":
            succeeded.append((task, status))
        elif status.state == "failed":
            _end(ctx, task, "failed", status.error or "the provider reported a failure")
        elif status.state == "running" and not task["started"]:
            queue.remote_task_started(ctx.db, ctx.job, task["id"])
            log.info("remote task started %s", _context(ctx, task))
        elif status.state == "running":
            _expire(ctx, work, task)
    if not succeeded:
        return set()

    def download(item: tuple[dict[str, Any], AnimationStatus]) -> Path | BotError:
        task, status = item
        out = directory / work.artifact(task["scene"]).replace("/", "-")
        try:
            work.download(status, out)
        except BotError as exc:
            return exc
        return out

    with ThreadPoolExecutor(len(succeeded), thread_name_prefix="remote-download") as pool:
        outcomes = list(pool.map(download, succeeded))
    saved = set()
    for (task, status), outcome in zip(succeeded, outcomes):
        if isinstance(outcome, PermanentError):
            _end(ctx, task, "failed", f"download: {outcome}")
        elif isinstance(outcome, BotError):
            log.info("remote result not downloaded %s error=%s", _context(ctx, task), outcome)
            _expire(ctx, work, task)
        else:
            ctx.check()
            name = work.artifact(task["scene"])
            queue.save_artifact(ctx.db, ctx.job, name, outcome.read_bytes())
            queue.end_remote_task(ctx.db, ctx.job, task["id"], "succeeded", None, status.output_url)
            log.info("remote result saved %s bytes=%s", _context(ctx, task), outcome.stat().st_size)
            saved.add(name)
    return saved


def _context(ctx: JobContext, task: dict[str, Any]) -> str:
    return f"job={ctx.job.id} step={ctx.job.step} scene={task['scene']} task={task['id']}"


def _end(ctx: JobContext, task: dict[str, Any], state: str, error: str) -> None:
    queue.end_remote_task(ctx.db, ctx.job, task["id"], state, error)
    log.warning("remote task %s %s error=%s", state, _context(ctx, task), error)


def _expire(ctx: JobContext, work: RemoteWork, task: dict[str, Any]) -> None:
    """End a task that has run past ANIMATION_TIMEOUT_SECONDS since the provider started it,
    cancelling it (best effort). One still waiting in the provider's line never expires."""
    timeout = ctx.settings.animation_timeout_seconds
    if not task["started"] or (task["age_seconds"] or 0.0) <= timeout:
        return
    try:
        work.provider.cancel(task["handle"])
    except BotError as exc:
        log.info("remote task not cancelled %s error=%s", _context(ctx, task), exc)
    _end(ctx, task, "failed", f"timed out after {timeout:.0f} s of running")
