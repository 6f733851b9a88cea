"""Stills into clips, the work of the step `animate` (shared/pipeline/steps.py): on this machine one
scene after another (a `LocalAnimator`), or as remote tasks that run side by side (a
`RemoteAnimator`: Runway, fal.ai), and the short preview the videos gate shows.

Remote tasks are durable and paid for once (sql/009_remote_tasks.sql). Each submission is
preceded by its row (`submitting`), and the handle is recorded the moment `submit` returns
(`running`); polling uses recorded handles only, so a later run, on any worker, resumes where
the last one stopped. Every scene is submitted at once, as far as ANIMATION_CONCURRENCY (tasks in
flight per provider, across all jobs) allows. A clip is downloaded and saved as the job's
artifact as soon as its task succeeds. While tasks run, the step polls every
ANIMATION_POLL_SECONDS as long as the worker's run has time (`JobContext.deadline`) and no other
job is due; then it parks the job (`queue.defer`: no lease, no attempt counted) and a later run,
or the same run after the other jobs, polls again.

The policy for a submission whose outcome is not known (no answer came back, or a run found its
row still `submitting` because the run that sent it died): the task may be running, and paid
for, at the provider, but its handle is lost, so it is `uncertain` and NEVER submitted again
automatically. Its scene falls back to its still (the render pans it), like a task that failed,
was refused, or ran past ANIMATION_TIMEOUT_SECONDS (then it is cancelled, best effort); the user
is told which scenes fell back, and only their explicit 🔁 at the videos gate (a new variant)
pays again. A submission that surely never reached the provider (the connection never opened, a
429) is `unsent` and submitted again, at most MAX_UNSENT times.
"""

from __future__ import annotations

import logging
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared import queue
from shared.errors import (
    BotError,
    OutcomeUnknown,
    OwnerActionNeeded,
    PermanentError,
    TransientError,
)
from shared.media import ffmpeg_exe, probe
from shared.pipeline.job import JobContext
from shared.plan import ScenePlan
from shared.providers.base import AnimationStatus, LocalAnimator, RemoteAnimator

log = logging.getLogger(__name__)

MAX_UNSENT = 5
"""Submissions of one scene that may fail before reaching the provider; then it falls back."""
PREVIEW_WIDTH = 360
PREVIEW_CLIP_SECONDS = 2.0
PREVIEW_STILL_SECONDS = 1.0
PREVIEW_FPS = 15
PREVIEW_TIMEOUT_S = 120


def clip_name(scene: int) -> str:
    """The artifact that holds scene `scene`'s clip."""
    return f"clip/{scene:02d}.mp4"


def is_remote(animator: RemoteAnimator | LocalAnimator) -> bool:
    return hasattr(animator, "submit")


@dataclass(frozen=True)
class Clips:
    """What became of the scenes: `made`, those with a clip saved; `fallback`, those that stay
    stills (their task failed, timed out, or its outcome is unknown)."""

    made: list[int]
    fallback: list[int]


def animate_locally(
    ctx: JobContext,
    animator: LocalAnimator,
    plan: ScenePlan,
    stills: list[Path],
    seconds: list[float],
    variants: tuple[int, int],
    work: Path,
) -> Clips:
    """A clip per scene, made here; each is saved and checkpointed with its variants as it is
    made, so a retry makes only the missing ones."""
    progress = ctx.job.checkpoints.get(ctx.job.step) or {}
    same = (progress.get("stills_variant"), progress.get("videos_variant")) == variants
    made = set(progress.get("clips", [])) if same else set()
    saved = queue.artifact_names(ctx.db, ctx.job.id, "clip/")
    for scene, still in enumerate(stills):
        if scene in made and clip_name(scene) in saved:
            continue
        ctx.status.show("progress_animate", scene=scene + 1, scenes=len(stills))
        out = work / f"clip-{scene:02d}.mp4"
        animator.animate(
            still,
            plan,
            scene,
            seconds[scene],
            ctx.settings.video_size,
            ctx.settings.video_fps,
            out,
            variant=variants[1],
        )
        ctx.check()
        queue.save_artifact(ctx.db, ctx.job, clip_name(scene), out.read_bytes())
        made.add(scene)
        ctx.checkpoint(
            {"stills_variant": variants[0], "videos_variant": variants[1], "clips": sorted(made)},
            ctx.job.step,
        )
    return Clips(sorted(made), [])


def animate_remotely(
    ctx: JobContext,
    animator: RemoteAnimator,
    plan: ScenePlan,
    stills: list[Path],
    seconds: list[float],
    key: queue.RemoteTaskKey,
    work: Path,
) -> Clips | None:
    """Submit, poll and download the scenes' tasks until every scene has its clip or has fallen
    back; None when the job was parked to poll again in a later run."""
    job = ctx.job
    for scene in queue.settle_stale_submissions(ctx.db, job):
        log.warning(
            "remote task outcome unknown job=%s step=%s scene=%s provider=%s: not submitted again",
            job.id,
            job.step,
            scene,
            key.provider,
        )
    saved = queue.artifact_names(ctx.db, job.id, "clip/")
    poll = ctx.settings.animation_poll_seconds
    while True:
        tasks = queue.remote_tasks(ctx.db, job.id, key)
        waiting = []
        for scene, still in enumerate(stills):
            task = tasks.get(scene)
            if task is None or (task["state"] == "unsent" and task["unsent"] < MAX_UNSENT):
                attempt = task["attempt"] + 1 if task else 1
                prompt = plan.scenes[scene].visual_prompt
                _submit(ctx, animator, key, scene, attempt, still, prompt, seconds[scene])
            elif _waiting(task, saved):
                waiting.append(task)
        saved |= _poll(ctx, animator, waiting, work)
        tasks = queue.remote_tasks(ctx.db, job.id, key)
        clips = _settled(tasks, len(stills), saved)
        if clips is not None:
            return clips
        ready = sum(
            clip_name(scene) in saved for scene in tasks if tasks[scene]["state"] == "succeeded"
        )
        ctx.status.show("progress_animate_remote", done=ready, scenes=len(stills))
        out_of_time = ctx.deadline is not None and time.monotonic() + poll >= ctx.deadline
        if out_of_time or queue.others_due(ctx.db, job.id):
            pending = len(stills) - ready
            queue.defer(ctx.db, job, poll, f"animate: waiting for {pending} remote task(s)")
            log.info(
                "job parked on remote tasks job=%s step=%s provider=%s pending=%s",
                job.id,
                job.step,
                key.provider,
                pending,
            )
            return None
        time.sleep(poll)
        ctx.check()


def _waiting(task: dict[str, Any], saved: set[str]) -> bool:
    """A task to ask after: running, or succeeded with its clip gone (a cancelled job's files)."""
    state = task["state"]
    return state == "running" or (state == "succeeded" and clip_name(task["scene"]) not in saved)


def _settled(tasks: dict[int, dict[str, Any]], scenes: int, saved: set[str]) -> Clips | None:
    """The scenes' outcome once none is left to submit or to wait for, else None."""
    made, fallback = [], []
    for scene in range(scenes):
        task = tasks.get(scene)
        state = task["state"] if task else None
        if state == "succeeded" and clip_name(scene) in saved:
            made.append(scene)
        elif state in ("failed", "uncertain") or (
            state == "unsent" and task["unsent"] >= MAX_UNSENT
        ):
            fallback.append(scene)
        else:
            return None
    return Clips(made, fallback)


def _submit(
    ctx: JobContext,
    animator: RemoteAnimator,
    key: queue.RemoteTaskKey,
    scene: int,
    attempt: int,
    still: Path,
    prompt: str,
    seconds: float,
) -> None:
    """Submit one scene's task when a slot is free: the intent first, the handle the moment the
    provider answers, then its price. What is recorded when no handle comes back decides
    whether it is ever submitted again (see the module's docstring)."""
    job = ctx.job
    billed = animator.billed_seconds(seconds)
    units = {"video_seconds": billed}
    ctx.meter.check("animation", units)
    task_id = queue.begin_remote_task(
        ctx.db,
        job,
        key,
        scene,
        attempt,
        slots=ctx.settings.animation_concurrency,
        timeout_seconds=ctx.settings.animation_timeout_seconds,
    )
    if task_id is None:
        return
    context = f"job={job.id} step={job.step} scene={scene} provider={key.provider} task={task_id}"
    try:
        handle = animator.submit(still, prompt, seconds, ctx.settings.video_size)
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
    usd = ctx.meter.price("animation", units)
    queue.remote_task_submitted(ctx.db, job, task_id, handle, billed, usd)
    ctx.meter.record("animation", units)
    log.info("remote task submitted %s remote_id=%s seconds=%s", context, handle.get("id"), billed)


def _poll(
    ctx: JobContext, animator: RemoteAnimator, waiting: list[dict[str, Any]], work: Path
) -> set[str]:
    """Ask after the waiting tasks by their recorded handles; download the clips of those that
    succeeded side by side, and save each as the job's artifact; end those that failed or ran
    past ANIMATION_TIMEOUT_SECONDS. Returns the names of the clips saved."""
    succeeded = []
    for task in waiting:
        try:
            status = animator.status(task["handle"])
        except TransientError as exc:
            log.info("remote task not polled %s error=%s", _context(ctx, task), exc)
            _expire(ctx, animator, task)
            continue
        except PermanentError as exc:
            _end(ctx, task, "failed", f"status: {exc}")
            continue
        if status.state == "succeeded":
            succeeded.append((task, status))
        elif status.state == "failed":
            _end(ctx, task, "failed", status.error or "the provider reported a failure")
        else:
            _expire(ctx, animator, task)
    if not succeeded:
        return set()

    def download(item: tuple[dict[str, Any], AnimationStatus]) -> Path | BotError:
        task, status = item
        out = work / f"clip-{task['scene']:02d}.mp4"
        try:
            animator.download(status, out)
        except BotError as exc:
            return exc
        return out

    with ThreadPoolExecutor(len(succeeded), thread_name_prefix="clip-download") as pool:
        outcomes = list(pool.map(download, succeeded))
    saved = set()
    for (task, status), outcome in zip(succeeded, outcomes):
        if isinstance(outcome, PermanentError):
            _end(ctx, task, "failed", f"download: {outcome}")
        elif isinstance(outcome, BotError):
            log.info("remote clip not downloaded %s error=%s", _context(ctx, task), outcome)
            _expire(ctx, animator, task)
        else:
            ctx.check()
            name = clip_name(task["scene"])
            queue.save_artifact(ctx.db, ctx.job, name, outcome.read_bytes())
            queue.end_remote_task(ctx.db, ctx.job, task["id"], "succeeded", None, status.output_url)
            log.info("remote clip saved %s bytes=%s", _context(ctx, task), outcome.stat().st_size)
            saved.add(name)
    return saved


def _context(ctx: JobContext, task: dict[str, Any]) -> str:
    return f"job={ctx.job.id} step={ctx.job.step} scene={task['scene']} task={task['id']}"


def _end(ctx: JobContext, task: dict[str, Any], state: str, error: str) -> None:
    queue.end_remote_task(ctx.db, ctx.job, task["id"], state, error)
    log.warning("remote task %s %s error=%s", state, _context(ctx, task), error)


def _expire(ctx: JobContext, animator: RemoteAnimator, task: dict[str, Any]) -> None:
    """End a task that has run past ANIMATION_TIMEOUT_SECONDS, cancelling it (best effort)."""
    timeout = ctx.settings.animation_timeout_seconds
    if (task["age_seconds"] or 0.0) <= timeout:
        return
    try:
        animator.cancel(task["handle"])
    except BotError as exc:
        log.info("remote task not cancelled %s error=%s", _context(ctx, task), exc)
    _end(ctx, task, "failed", f"timed out after {timeout:.0f} s")


@dataclass(frozen=True)
class Preview:
    path: Path
    seconds: float
    width: int
    height: int


def make_preview(visuals: list[Path], size: tuple[int, int], out: Path) -> Preview:
    """The videos gate's preview: each scene's clip cut to PREVIEW_CLIP_SECONDS (or its still
    held PREVIEW_STILL_SECONDS), joined, PREVIEW_WIDTH wide, silent, H.264."""
    width = PREVIEW_WIDTH
    height = round(PREVIEW_WIDTH * size[1] / size[0] / 2) * 2
    inputs: list[str] = []
    chains: list[str] = []
    for index, path in enumerate(visuals):
        if path.suffix == ".mp4":
            inputs += ["-t", f"{PREVIEW_CLIP_SECONDS}", "-i", str(path)]
        else:
            seconds = f"{PREVIEW_STILL_SECONDS}"
            inputs += ["-loop", "1", "-framerate", f"{PREVIEW_FPS}", "-t", seconds, "-i", str(path)]
        chains.append(
            f"[{index}:v]scale={width}:{height}:force_original_aspect_ratio=increase,"
            f"crop={width}:{height},setsar=1,fps={PREVIEW_FPS},format=yuv420p[v{index}]"
        )
    joined = "".join(f"[v{index}]" for index in range(len(visuals)))
    graph = ";".join([*chains, f"{joined}concat=n={len(visuals)}:v=1:a=0[out]"])
    command = [
        ffmpeg_exe(),
        "-hide_banner",
        "-v",
        "error",
        "-y",
        *inputs,
        "-filter_complex",
        graph,
        "-map",
        "[out]",
        "-an",
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-crf",
        "32",
        "-movflags",
        "+faststart",
        str(out),
    ]
    subprocess.run(command, check=True, capture_output=True, timeout=PREVIEW_TIMEOUT_S)
    return Preview(out, probe(out).duration, width, height)
