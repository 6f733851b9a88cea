"""The steps of a job, in order. Each step reads what earlier steps checkpointed, does its work
in a temporary directory of its own, checkpoints its result and names the next step. A review
step sends the gate message and parks the job until the user (or an operator) decides.

    script -> review_script -> media -> review_storyboard -> render -> deliver
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Callable

from shared import queue
from shared.buttons import gate_keyboard, resend_keyboard
from shared.errors import OutcomeUnknown, PermanentError, TransientError
from shared.media import audio_duration
from shared.pipeline.job import ChatAction, JobContext
from shared.pipeline.render import render_video
from shared.pipeline.storyboard import make_storyboard
from shared.plan import ScenePlan, parse_edited_script
from shared.telegram import ChatBlocked, RateLimited, TelegramError
from shared.texts import script_message, t

log = logging.getLogger(__name__)

GATE_OF_REVIEW = {"review_script": "script", "review_storyboard": "storyboard"}
REVIEW_OF_GATE = {gate: review for review, gate in GATE_OF_REVIEW.items()}
STEP_AFTER_GATE = {"script": "media", "storyboard": "render"}
STEP_REDONE_BY_GATE = {"script": "script", "storyboard": "media"}


def _work_dir(ctx: JobContext) -> tempfile.TemporaryDirectory:
    """One directory per job and step, removed when the step ends, however it ends."""
    return tempfile.TemporaryDirectory(prefix=f"videobot-job{ctx.job.id}-{ctx.job.step}-")


def _rewind_if_missing(ctx: JobContext, files: dict[str, bytes], count: int, step: str) -> bool:
    """Files of an earlier step are gone (a cancelled job retried by an operator): go back and
    make them again rather than fail. True when the job was sent back to `step`."""
    if len(files) >= count:
        return False
    log.warning("files missing job=%s step=%s found=%s rewind_to=%s", ctx.job.id, ctx.job.step, len(files), step)
    ctx.checkpoint({"rewound_to": step, "files_found": len(files)}, step)
    return True


def _write_files(files: dict[str, bytes], directory: Path) -> list[Path]:
    """Artifacts as files in `directory`, in name order."""
    paths = []
    for name, content in sorted(files.items()):
        path = directory / name.replace("/", "-")
        path.write_bytes(content)
        paths.append(path)
    return paths


def _plan(ctx: JobContext) -> ScenePlan:
    return ScenePlan.from_dict(ctx.job.checkpoints["script"])


def _revision(ctx: JobContext, gate: str) -> dict:
    """What the user asked for at `gate` the last time: {"count": n, "kind": ..., "text": ...}."""
    return ctx.job.checkpoints.get(REVIEW_OF_GATE[gate]) or {}


def step_script(ctx: JobContext) -> bool:
    ctx.status.show("progress_script", force=True)
    revision = _revision(ctx, "script")
    seconds = ctx.settings.video_seconds
    if revision.get("kind") == "edit":
        plan = parse_edited_script(revision["text"], ctx.language, seconds)
    else:
        plan = ctx.providers.script.write(
            ctx.job.description, ctx.language, seconds, variant=revision.get("count", 0)
        )
    log.info("script written job=%s scenes=%d", ctx.job.id, len(plan.scenes))
    ctx.checkpoint(plan.to_dict(), "review_script")
    return False


def step_review(ctx: JobContext) -> bool:
    """Send the gate message and park the job, or pass straight on when the gate is off."""
    gate = GATE_OF_REVIEW[ctx.job.step]
    if gate not in ctx.settings.approval_gates:
        ctx.checkpoint({"approved": "gate off"}, STEP_AFTER_GATE[gate])
        return False
    plan = _plan(ctx)
    stills = queue.load_artifacts(ctx.db, ctx.job.id, "image/") if gate == "storyboard" else {}
    if gate == "storyboard" and _rewind_if_missing(ctx, stills, len(plan.scenes), "media"):
        return False
    keyboard = gate_keyboard(ctx.job.id, gate, ctx.language)
    if gate == "script":
        text = script_message(plan.title, [scene.narration for scene in plan.scenes], ctx.language)
        message = ctx.telegram.send_message(ctx.job.chat_id, text, reply_markup=keyboard)
    else:
        with _work_dir(ctx) as tmp:
            images = _write_files(stills, Path(tmp))
            sheet = make_storyboard(images, Path(tmp) / "storyboard.jpg")
            caption = t("storyboard_caption", ctx.language, title=plan.title, scenes=len(images))
            message = ctx.telegram.send_photo(
                ctx.job.chat_id, sheet, caption=caption, reply_markup=keyboard
            )
    ctx.check()
    queue.open_gate(
        ctx.db, ctx.job, gate, message["message_id"], ctx.settings.approval_ttl_hours * 3600
    )
    log.info("gate opened job=%s gate=%s message=%s", ctx.job.id, gate, message["message_id"])
    return True


def step_media(ctx: JobContext) -> bool:
    """A voice-over and a still per scene. Voices and stills already made (and paid for) survive
    a retry: each still drawn is checkpointed with its variant, so only a storyboard
    regeneration, which asks for a new variant, draws them again (for the same voices)."""
    plan = _plan(ctx)
    variant = _revision(ctx, "storyboard").get("count", 0)
    progress = ctx.job.checkpoints.get("media") or {}
    drawn = set(progress.get("stills_drawn", [])) if progress.get("stills_variant") == variant else set()
    made = queue.load_artifacts(ctx.db, ctx.job.id, "voice/")
    stills = queue.load_artifacts(ctx.db, ctx.job.id, "image/")
    durations: list[float] = []
    with _work_dir(ctx) as tmp:
        work = Path(tmp)
        for index, scene in enumerate(plan.scenes):
            ctx.status.show("progress_voice", pct=100 * index // len(plan.scenes))
            name = f"voice/{index:02d}.wav"
            path = work / f"voice-{index:02d}.wav"
            if name in made:
                path.write_bytes(made[name])
                durations.append(audio_duration(path))
                continue
            durations.append(ctx.providers.voice.speak(scene.narration, ctx.language, path))
            ctx.check()
            queue.save_artifact(ctx.db, ctx.job, name, path.read_bytes())
        for index in range(len(plan.scenes)):
            name = f"image/{index:02d}.png"
            if index in drawn and name in stills:
                continue
            ctx.status.show("progress_images", pct=100 * index // len(plan.scenes))
            path = work / f"image-{index:02d}.png"
            ctx.providers.visuals.draw(plan, index, ctx.settings.video_size, path, variant=variant)
            ctx.check()
            queue.save_artifact(ctx.db, ctx.job, name, path.read_bytes())
            drawn.add(index)
            ctx.checkpoint({"stills_variant": variant, "stills_drawn": sorted(drawn)}, "media")
    ctx.checkpoint(
        {"durations": durations, "stills_variant": variant, "stills_drawn": sorted(drawn)},
        "review_storyboard",
    )
    return False


def step_render(ctx: JobContext) -> bool:
    plan = _plan(ctx)
    scenes = len(plan.scenes)
    voices = queue.load_artifacts(ctx.db, ctx.job.id, "voice/")
    stills = queue.load_artifacts(ctx.db, ctx.job.id, "image/")
    if _rewind_if_missing(ctx, voices, scenes, "media") or _rewind_if_missing(ctx, stills, scenes, "media"):
        return False
    durations = ctx.job.checkpoints["media"]["durations"]
    width, height = ctx.settings.video_size

    def on_progress(fraction: float) -> None:
        ctx.check()
        ctx.status.show("progress_render", pct=min(99, int(fraction * 100)))

    with _work_dir(ctx) as tmp:
        work = Path(tmp)
        audios = _write_files(voices, work)
        images = _write_files(stills, work)
        ctx.status.show("progress_render", force=True, pct=0)
        result = render_video(
            plan, images, audios, durations, work / "video.mp4",
            size=(width, height), fps=ctx.settings.video_fps, work_dir=work,
            progress=on_progress,
        )
        ctx.check()
        queue.save_artifact(ctx.db, ctx.job, "out/video.mp4", result.path.read_bytes())
        queue.save_artifact(ctx.db, ctx.job, "out/thumb.jpg", result.thumbnail.read_bytes())
    ctx.checkpoint(
        {"duration": result.duration, "width": result.width, "height": result.height,
         "size_bytes": result.size_bytes},
        "deliver",
    )
    return False


def step_deliver(ctx: JobContext) -> bool:
    """Send the video, telling apart the outcomes of an upload (sql/003_delivery_outcomes.sql):
    sent; not sent (Telegram answered with an error), retried later; unknown (no answer came
    back), never sent again unasked: the user gets a button that sends it again. A rate limit
    defers the job to when Telegram allows it, without counting an attempt."""
    job = ctx.job
    delivery = ctx.db.one("delivery_state", id=job.id)
    state = delivery["state"] if delivery else None
    try:
        if state == "sending":  # the run that began this upload ended before its answer
            queue.end_delivery(ctx.db, job, "unknown", "an earlier run ended while sending the video")
            state = "unknown"
        if state in (None, "failed", "resend"):
            files = queue.load_artifacts(ctx.db, job.id, "out/")
            if _rewind_if_missing(ctx, files, 2, "render"):
                return False
            state = "sent" if _send_video(ctx, files) else "unknown"
        elif state == "sent":
            log.info("video already delivered job=%s", job.id)
        if state == "unknown":
            _offer_resend(ctx)
            return True
    except RateLimited as exc:
        delay = exc.retry_after or 1.0
        queue.defer(ctx.db, job, delay, f"deliver: {exc}")
        log.info("delivery deferred job=%s chat=%s retry_after=%.1f", job.id, job.chat_id, delay)
        return True
    ctx.status.show("progress_done", force=True)
    queue.complete(ctx.db, job)
    job.step = "done"
    return True


def _send_video(ctx: JobContext, files: dict[str, bytes]) -> bool:
    """Upload the video: True when Telegram answered with the message, False when no answer came
    back (the outcome is unknown). An error answer, or a request that never left, is recorded
    as not sent and raised: `RateLimited` (the job is deferred), `ChatBlocked`, or a
    `TransientError` that retries the step with backoff (Telegram's refusal included)."""
    job = ctx.job
    video = job.checkpoints["render"]
    ctx.status.show("progress_sending", force=True)
    queue.begin_delivery(ctx.db, job)
    with _work_dir(ctx) as tmp:
        paths = {path.name: path for path in _write_files(files, Path(tmp))}
        try:
            with ChatAction(ctx.telegram, job.chat_id, "upload_video"):
                message = ctx.telegram.send_video(
                    job.chat_id, paths["out-video.mp4"],
                    duration=video["duration"], width=video["width"], height=video["height"],
                    thumbnail=paths["out-thumb.jpg"],
                    caption=t("video_caption", ctx.language, title=_plan(ctx).title),
                )
        except OutcomeUnknown as exc:
            queue.end_delivery(ctx.db, job, "unknown", str(exc))
            log.warning("video outcome unknown job=%s chat=%s error=%s", job.id, job.chat_id, exc)
            return False
        except (TransientError, PermanentError) as exc:
            queue.end_delivery(ctx.db, job, "failed", str(exc))
            log.warning("video not sent job=%s chat=%s error=%s", job.id, job.chat_id, exc)
            if isinstance(exc, TelegramError) and not isinstance(exc, ChatBlocked):
                raise TransientError(f"video not sent: {exc}") from None
            raise
    queue.finish_delivery(ctx.db, job, message["message_id"])
    log.info("video delivered job=%s chat=%s message=%s", job.id, job.chat_id, message["message_id"])
    return True


def _offer_resend(ctx: JobContext) -> None:
    """The video may or may not have arrived, and a second copy must not go unasked: tell the
    user, with a button that sends it again, and finish the job keeping the video."""
    job = ctx.job
    ctx.status.show("progress_unknown", force=True)
    ctx.telegram.send_message(
        job.chat_id, t("delivery_unknown", ctx.language, job_id=job.id),
        reply_markup=resend_keyboard(job.id, ctx.language),
    )
    queue.complete(ctx.db, job)
    job.step = "done"
    log.info("resend offered job=%s chat=%s", job.id, job.chat_id)


STEPS: dict[str, Callable[[JobContext], bool]] = {
    "script": step_script,
    "review_script": step_review,
    "media": step_media,
    "review_storyboard": step_review,
    "render": step_render,
    "deliver": step_deliver,
}
