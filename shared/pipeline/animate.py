"""Stills into clips, the work of the step `animate` (shared/pipeline/steps.py): on this machine one
scene after another (a `LocalAnimator`), or as remote tasks that run side by side (a
`RemoteAnimator`: Runway, fal.ai), and the short preview the videos gate shows.

Remote clips go through the engine of shared/pipeline/remote_tasks.py: durable, paid for once,
at most ANIMATION_CONCURRENCY in flight per provider across all jobs, each timed out
ANIMATION_TIMEOUT_SECONDS after the provider starts running it (never while it waits in the
provider's line). A scene whose task failed, timed out or whose outcome is unknown falls back to
its still (the render pans it); the user is told which, and only their 🔁 at the videos gate (a
new variant) pays again.
"""

from __future__ import annotations

import logging
import subprocess
from dataclasses import dataclass
from pathlib import Path

from shared import queue
from shared.media import ffmpeg_exe, probe
from shared.pipeline.job import JobContext
from shared.pipeline.remote_tasks import Pending, RemoteWork, Settled, park, run_remote
from shared.plan import ScenePlan
from shared.providers.base import LocalAnimator, RemoteAnimator

log = logging.getLogger(__name__)

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


Clips = Settled
"""What became of the scenes: `made`, those with a clip saved; `fallback`, those that stay
stills."""


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
    scenes = len(stills)

    def submit(scene: int) -> dict:
        prompt = plan.scenes[scene].visual_prompt
        return animator.submit(stills[scene], prompt, seconds[scene], ctx.settings.video_size)

    def units(scene: int) -> dict[str, float]:
        return {"video_seconds": animator.billed_seconds(seconds[scene])}

    remote = RemoteWork(
        provider=animator,
        key=key,
        scenes=scenes,
        artifact=clip_name,
        submit=submit,
        download=animator.download,
        cost="animation",
        units=units,
        billed_seconds=lambda scene: animator.billed_seconds(seconds[scene]),
        slots=ctx.settings.animation_concurrency,
        progress=lambda done: ctx.status.show("progress_animate_remote", done=done, scenes=scenes),
    )
    outcome = run_remote(ctx, remote, work)
    if isinstance(outcome, Pending):
        park(ctx, outcome)
        return None
    return outcome


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
