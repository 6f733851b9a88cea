"""The steps of a job and `TABLE`, the one place that puts them in order (see
shared/pipeline/table.py). Each step reads what earlier steps checkpointed, does its work in a
temporary directory of its own, checkpoints its result and moves the job to the step the table
says comes next. A review step sends the gate message and parks the job until the user (or an
operator) decides.
"""

from __future__ import annotations

import logging
import subprocess
import unicodedata
from pathlib import Path

from shared import queue
from shared.buttons import gate_keyboard, resend_keyboard
from shared.costs import script_units
from shared.errors import OutcomeUnknown, OwnerActionNeeded, PermanentError, TransientError
from shared.media import audio_duration
from shared.pipeline import timings
from shared.pipeline.animate import (
    Clips,
    animate_locally,
    animate_remotely,
    clip_name,
    is_remote,
    make_preview,
)
from shared.pipeline.audio import MusicChoice
from shared.pipeline.job import ChatAction, JobContext
from shared.pipeline.media import show_images, step_media
from shared.pipeline.render import gap_seconds_for, render_video
from shared.pipeline.table import DONE, Gate, Next, Step, Table
from shared.plan import ScenePlan, parse_edited_script
from shared.providers.base import WordTiming
from shared.telegram import ChatBlocked, RateLimited, TelegramError, fit_text
from shared.texts import format_duration, script_message, t

log = logging.getLogger(__name__)


def _advance(ctx: JobContext, result: object) -> Next:
    """Checkpoint the step's result and move the job to the step that follows it."""
    ctx.checkpoint(result, TABLE.next_step(ctx.job.step))
    return Next.CONTINUE


def _files(
    ctx: JobContext, prefix: str, count: int, names: tuple[str, ...] = ()
) -> dict[str, bytes] | None:
    """The `count` artifacts whose names start with `prefix` (among them `names`); None when
    some are gone (a cancelled job retried by an operator) and the job was sent back to the
    step that makes them, rather than fail."""
    files = queue.load_artifacts(ctx.db, ctx.job.id, prefix)
    if len(files) >= count and all(name in files for name in names):
        return files
    step = TABLE.maker_of(prefix)
    log.warning(
        "files missing job=%s step=%s found=%s rewind_to=%s",
        ctx.job.id,
        ctx.job.step,
        len(files),
        step,
    )
    ctx.checkpoint({"rewound_to": step, "files_found": len(files)}, step)
    return None


def _write_files(files: dict[str, bytes], directory: Path) -> list[Path]:
    """Artifacts as files in `directory`, in name order."""
    paths = []
    for name, content in sorted(files.items()):
        path = directory / name.replace("/", "-")
        path.write_bytes(content)
        paths.append(path)
    return paths


def _revision(ctx: JobContext, gate: str) -> dict:
    """What the user asked for at `gate` the last time: {"count": n, "kind": ..., "text": ...}."""
    return ctx.job.checkpoints.get(TABLE.review_of(gate)) or {}


def step_script(ctx: JobContext) -> Next:
    ctx.status.show("progress_script", force=True)
    revision = _revision(ctx, "script")
    seconds = ctx.settings.video_seconds
    if revision.get("kind") == "edit":
        plan = parse_edited_script(revision["text"], ctx.language, seconds)
    else:
        expected = script_units(ctx.job.description)
        ctx.meter.check("script", expected)
        plan = ctx.providers.script.write(
            ctx.job.description, ctx.language, seconds, variant=revision.get("count", 0)
        )
        # The tokens the API reported (OpenAIScript.usage); the expected ones when it gave none.
        ctx.meter.record("script", getattr(ctx.providers.script, "usage", None) or expected)
    log.info("script written job=%s scenes=%d", ctx.job.id, len(plan.scenes))
    return _advance(ctx, plan.to_dict())


def step_review(ctx: JobContext) -> Next:
    """Send the gate message and park the job, or pass straight on when the gate is off. What the
    message shows is the gate's own (`Gate.show`); the rest is the same for every gate."""
    gate = TABLE.gate_of(ctx.job.step)
    if gate.name not in ctx.settings.approval_gates:
        return _advance(ctx, {"approved": "gate off"})
    message = gate.show(ctx, gate_keyboard(ctx.job.id, gate.name, ctx.language))
    if message is None:
        return Next.CONTINUE
    ctx.check()
    queue.open_gate(
        ctx.db, ctx.job, gate.name, message["message_id"], ctx.settings.approval_ttl_hours * 3600
    )
    log.info("gate opened job=%s gate=%s message=%s", ctx.job.id, gate.name, message["message_id"])
    return Next.PARKED


def show_script(ctx: JobContext, keyboard: dict) -> dict:
    """The script gate: the title and each scene's narration, as text."""
    plan = ctx.plan()
    text = script_message(plan.title, [scene.narration for scene in plan.scenes], ctx.language)
    heard = (ctx.job.checkpoints.get("transcribe") or {}).get("heard")
    if heard:  # a spoken description: what was heard comes first, so it can be corrected
        text = f"{t('voice_heard', ctx.language, text=fit_text(heard, HEARD_CHARS))}\n\n{text}"
    return ctx.telegram.send_message(ctx.job.chat_id, text, reply_markup=keyboard)


def step_animate(ctx: JobContext) -> Next:
    """A clip per approved still, through ANIMATION_PROVIDER (shared/pipeline/animate.py). The
    clips belong to the stills' variant and to the videos gate's regenerate count: new stills or
    a 🔁 at the videos gate make new clips, a retry of the step never makes one again. With no
    animator (`none`) the step is skipped and the render pans the stills."""
    animator = ctx.providers.animator
    if animator is None:
        return _advance(ctx, {"skipped": True, "clips": [], "fallback": []})
    plan = ctx.plan()
    stills = _files(ctx, "image/", len(plan.scenes), tuple(_still_names(plan)))
    if stills is None:
        return Next.CONTINUE
    variants = (
        ctx.job.checkpoints["media"].get("stills_variant", 0),
        _revision(ctx, "videos").get("count", 0),
    )
    durations = ctx.job.checkpoints["media"]["durations"]
    seconds = [duration + gap_seconds_for(durations) for duration in durations]
    with ctx.work_dir() as tmp:
        work = Path(tmp)
        paths = _write_files({name: stills[name] for name in _still_names(plan)}, work)
        if is_remote(animator):
            key = queue.RemoteTaskKey(animator.name, animator.model, *variants)
            clips = animate_remotely(ctx, animator, plan, paths, seconds, key, work)
            if clips is None:
                return Next.PARKED
        else:
            clips = animate_locally(ctx, animator, plan, paths, seconds, variants, work)
    log.info(
        "scenes animated job=%s clips=%s fallback=%s",
        ctx.job.id,
        len(clips.made),
        ",".join(map(str, clips.fallback)) or "-",
    )
    if clips.fallback and "videos" not in ctx.settings.approval_gates:
        _tell_fallback(ctx, clips)
    return _advance(
        ctx,
        {
            "stills_variant": variants[0],
            "videos_variant": variants[1],
            "clips": clips.made,
            "fallback": clips.fallback,
        },
    )


def _still_names(plan: ScenePlan) -> list[str]:
    return [f"image/{index:02d}.png" for index in range(len(plan.scenes))]


def _scene_numbers(scenes: list[int]) -> str:
    return ", ".join(str(scene + 1) for scene in scenes)


def _tell_fallback(ctx: JobContext, clips: Clips) -> None:
    """With the videos gate off, the user still learns which scenes stay stills; best effort,
    as the film goes on either way."""
    text = t(
        "animation_fallback",
        ctx.language,
        job_id=ctx.job.id,
        scenes=_scene_numbers(clips.fallback),
    )
    try:
        ctx.telegram.send_message(ctx.job.chat_id, text)
    except (TelegramError, TransientError) as exc:
        log.warning("fallback notice not delivered job=%s error=%s", ctx.job.id, exc)


def _scene_visuals(ctx: JobContext, work: Path) -> list[Path] | None:
    """Each scene's picture for the preview and the render, as a file in `work`: its clip when
    the step `animate` made one, else its still. None when some are gone and the job was sent
    back to make them."""
    plan = ctx.plan()
    stills = _files(ctx, "image/", len(plan.scenes), tuple(_still_names(plan)))
    if stills is None:
        return None
    made = (ctx.job.checkpoints.get("animate") or {}).get("clips", [])
    clips: dict[str, bytes] = {}
    if made:
        names = tuple(clip_name(scene) for scene in made)
        clips = _files(ctx, "clip/", len(names), names)
        if clips is None:
            return None
    visuals = []
    for index, name in enumerate(_still_names(plan)):
        clip = clip_name(index)
        path = work / (clip if index in made else name).replace("/", "-")
        path.write_bytes(clips[clip] if index in made else stills[name])
        visuals.append(path)
    return visuals


def show_videos(ctx: JobContext, keyboard: dict) -> dict | None:
    """The videos gate: one short, small, silent preview of the clips joined (a scene that fell
    back shows its still), with the scenes that fell back named in the caption. With nothing
    animated (ANIMATION_PROVIDER=none) there is nothing to decide: the job moves on at once
    (None, as when the clips are gone and the job was sent back to make them)."""
    animated = ctx.job.checkpoints.get("animate") or {}
    if animated.get("skipped"):
        _advance(ctx, {"approved": "nothing to show"})
        return None
    plan = ctx.plan()
    with ctx.work_dir() as tmp:
        work = Path(tmp)
        visuals = _scene_visuals(ctx, work)
        if visuals is None:
            return None
        preview = make_preview(visuals, ctx.settings.video_size, work / "preview.mp4")
        caption = t("videos_caption", ctx.language, title=plan.title, scenes=len(visuals))
        fallback = animated.get("fallback", [])
        if fallback:
            scenes = _scene_numbers(fallback)
            caption = f"{caption}\n{t('videos_fallback', ctx.language, scenes=scenes)}"
        return ctx.telegram.send_video(
            ctx.job.chat_id,
            preview.path,
            duration=preview.seconds,
            width=preview.width,
            height=preview.height,
            caption=caption,
            reply_markup=keyboard,
        )


RENDER_WAIT_SECONDS = 5.0
"""How long a job waits in line when every render slot of the worker that took it is busy."""


def step_render(ctx: JobContext) -> Next:
    """Render the film, when the worker's memory has room for one more render (a slot of
    `ctx.render_slots`); else the job waits in line, holding no lease, for this worker or
    another to render it."""
    slots = ctx.render_slots
    if slots is not None and not slots.acquire(blocking=False):
        queue.defer(ctx.db, ctx.job, RENDER_WAIT_SECONDS, "render: every render slot is busy")
        log.info("render waits for a slot job=%s", ctx.job.id)
        return Next.PARKED
    try:
        return _render(ctx)
    finally:
        if slots is not None:
            slots.release()


def _render(ctx: JobContext) -> Next:
    plan = ctx.plan()
    scenes = len(plan.scenes)
    voices = _files(ctx, "voice/", scenes)
    if voices is None:
        return Next.CONTINUE
    durations = ctx.job.checkpoints["media"]["durations"]
    width, height = ctx.settings.video_size

    def on_progress(fraction: float) -> None:
        ctx.check()
        ctx.status.show("progress_render", pct=min(99, int(fraction * 100)))

    with ctx.work_dir() as tmp:
        work = Path(tmp)
        visuals = _scene_visuals(ctx, work)
        if visuals is None:
            return Next.CONTINUE
        audios = _write_files(voices, work)
        ctx.status.show("progress_render", force=True, pct=0)
        result = render_video(
            plan,
            visuals,
            audios,
            durations,
            work / "video.mp4",
            size=(width, height),
            fps=ctx.settings.video_fps,
            work_dir=work,
            progress=on_progress,
            words=_word_timings(ctx, scenes),
            caption_style=ctx.settings.caption_style,
            music=MusicChoice(
                ctx.settings.music,
                seed=f"{ctx.job.id}:{plan.title}",
                music_dir=ctx.settings.music_dir,
                mood=plan.mood,
            ),
        )
        ctx.check()
        queue.save_artifact(ctx.db, ctx.job, "out/video.mp4", result.path.read_bytes())
        queue.save_artifact(ctx.db, ctx.job, "out/thumb.jpg", result.thumbnail.read_bytes())
    return _advance(
        ctx,
        {
            "duration": result.duration,
            "width": result.width,
            "height": result.height,
            "size_bytes": result.size_bytes,
        },
    )


def _word_timings(ctx: JobContext, scenes: int) -> list[list[WordTiming]] | None:
    """Each scene's word timings, kept with its voice by `media`; None for a job whose voices
    were made before timings were kept (the render estimates them then)."""
    stored = queue.load_artifacts(ctx.db, ctx.job.id, "words/")
    if len(stored) < scenes:
        return None
    return [timings.loads(stored[f"words/{index:02d}.json"]) for index in range(scenes)]


def step_deliver(ctx: JobContext) -> Next:
    """Send the video, telling apart the outcomes of an upload (sql/003_delivery_outcomes.sql):
    sent; not sent (Telegram answered with an error), retried later; unknown (no answer came
    back), never sent again unasked: the user gets a button that sends it again. A rate limit
    defers the job to when Telegram allows it, without counting an attempt."""
    job = ctx.job
    delivery = queue.delivery_state(ctx.db, job.id)
    state = delivery["state"] if delivery else None
    try:
        if state == "sending":  # the run that began this upload ended before its answer
            queue.end_delivery(
                ctx.db, job, "unknown", "an earlier run ended while sending the video"
            )
            state = "unknown"
        if state in (None, "failed", "resend"):
            files = _files(ctx, "out/", 2)
            if files is None:
                return Next.CONTINUE
            state = "sent" if _send_video(ctx, files) else "unknown"
        elif state == "sent":
            log.info("video already delivered job=%s", job.id)
        if state == "unknown":
            _offer_resend(ctx)
            return Next.FINISHED
    except RateLimited as exc:
        delay = exc.retry_after or 1.0
        queue.defer(ctx.db, job, delay, f"deliver: {exc}")
        log.info("delivery deferred job=%s chat=%s retry_after=%.1f", job.id, job.chat_id, delay)
        return Next.PARKED
    ctx.status.show("progress_done", force=True)
    queue.complete(ctx.db, job)
    job.step = DONE
    return Next.FINISHED


def _send_video(ctx: JobContext, files: dict[str, bytes]) -> bool:
    """Upload the video: True when Telegram answered with the message, False when no answer came
    back (the outcome is unknown). An error answer, or a request that never left, is recorded
    as not sent and raised: `RateLimited` (the job is deferred), `ChatBlocked`, or a
    `TransientError` that retries the step with backoff (Telegram's refusal included)."""
    job = ctx.job
    video = job.checkpoints["render"]
    ctx.status.show("progress_sending", force=True)
    queue.begin_delivery(ctx.db, job)
    with ctx.work_dir() as tmp:
        paths = {path.name: path for path in _write_files(files, Path(tmp))}
        try:
            with ChatAction(ctx.telegram, job.chat_id, "upload_video"):
                message = ctx.telegram.send_video(
                    job.chat_id,
                    paths["out-video.mp4"],
                    duration=video["duration"],
                    width=video["width"],
                    height=video["height"],
                    thumbnail=paths["out-thumb.jpg"],
                    caption=_caption_with_times(ctx),
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
    log.info(
        "video delivered job=%s chat=%s message=%s", job.id, job.chat_id, message["message_id"]
    )
    return True


def _caption_with_times(ctx: JobContext) -> str:
    """The video's caption: its title, then how long the job took in all and how much of that
    it waited at gates for the user's decisions."""
    times = queue.job_times(ctx.db, ctx.job.id)
    title = t("video_caption", ctx.language, title=ctx.plan().title)
    took = t(
        "video_times",
        ctx.language,
        total=format_duration(times["total_seconds"], ctx.language),
        deciding=format_duration(times["deciding_seconds"], ctx.language),
    )
    return f"{title}\n{took}"


def _offer_resend(ctx: JobContext) -> None:
    """The video may or may not have arrived, and a second copy must not go unasked: tell the
    user, with a button that sends it again, and finish the job keeping the video."""
    job = ctx.job
    ctx.status.show("progress_unknown", force=True)
    ctx.telegram.send_message(
        job.chat_id,
        t("delivery_unknown", ctx.language, job_id=job.id),
        reply_markup=resend_keyboard(job.id, ctx.language),
    )
    queue.complete(ctx.db, job)
    job.step = DONE
    log.info("resend offered job=%s chat=%s", job.id, job.chat_id)


# ---- a spoken description ---------------------------------------------------------------------

HEARD_CHARS = 500
"""How much of what was heard the script message repeats."""
FOREIGN_LETTERS_SHARE = 0.2
"""A transcript whose letters are more than this share neither Cyrillic nor ASCII Latin is in
another language (the job's language goes to the API only as a hint, and gpt-4o transcription
models answer no detected language)."""


def _seconds_of(path: Path) -> float:
    """The voice file's length, for its price; 0 when ffmpeg cannot read it (the transcription
    API then says what is wrong with the file)."""
    try:
        return audio_duration(path)
    except (ValueError, OSError, subprocess.SubprocessError):
        return 0.0


def step_transcribe(ctx: JobContext) -> Next:
    """Download the voice message (getFile, then the file) and hear it; what was heard becomes
    the job's description. A transcript the bot cannot use (nothing heard, too long, neither
    Russian nor English) ends the job at once with a message that says why, spending nothing
    more."""
    job = ctx.job
    if ctx.providers.transcriber is None:
        raise OwnerActionNeeded(
            "a spoken description needs a transcriber: set TRANSCRIBE_PROVIDER=openai for the "
            "worker too"
        )
    file_id = queue.voice_file_id(ctx.db, job.id)
    if not file_id:
        raise PermanentError("the job has no voice file to transcribe")
    ctx.status.show("progress_transcribe", force=True)
    file_path = ctx.telegram.get_file(file_id).get("file_path")
    if not file_path:
        raise PermanentError("Telegram gave no file_path for the voice file")
    audio = ctx.telegram.download_file(file_path)
    ctx.check()
    with ctx.work_dir() as tmp:
        path = Path(tmp) / Path(file_path).name
        path.write_bytes(audio)
        listened = {"audio_seconds": _seconds_of(path)}
        ctx.meter.check("transcribe", listened)
        heard = ctx.providers.transcriber.transcribe(path, ctx.language).strip()
        ctx.meter.record("transcribe", listened)
    max_chars = ctx.settings.max_description_chars
    log.info("voice transcribed job=%s bytes=%d chars=%d", job.id, len(audio), len(heard))
    if not heard:
        return _refuse_transcript(ctx, "nothing heard", "voice_empty")
    if len(heard) > max_chars:
        return _refuse_transcript(
            ctx,
            f"{len(heard)} characters heard, the limit is {max_chars}",
            "voice_too_long",
            length=len(heard),
            max_chars=max_chars,
        )
    if not is_russian_or_english(heard):
        return _refuse_transcript(ctx, "neither Russian nor English", "voice_language")
    ctx.check()
    queue.set_description(ctx.db, job, heard)
    return _advance(ctx, {"heard": heard, "audio_bytes": len(audio)})


def is_russian_or_english(text: str) -> bool:
    """True when the letters of `text` are (nearly all) Cyrillic or ASCII Latin; a text with no
    letters (digits only) passes."""
    letters = [char for char in text if char.isalpha()]
    foreign = sum(
        not char.isascii() and "CYRILLIC" not in unicodedata.name(char, "") for char in letters
    )
    return foreign <= FOREIGN_LETTERS_SHARE * len(letters)


def _refuse_transcript(ctx: JobContext, reason: str, key: str, **fmt: object) -> Next:
    """Fail the job for good over its transcript, then tell the user why (best effort: the job
    is already failed, so nothing is retried)."""
    job = ctx.job
    ctx.check()
    queue.fail(ctx.db, job, f"transcribe: {reason}", permanent=True)
    log.info("voice refused job=%s reason=%s", job.id, reason)
    try:
        ctx.telegram.send_message(job.chat_id, t(key, ctx.language, job_id=job.id, **fmt))
    except (TelegramError, TransientError) as exc:
        log.warning("voice refusal not delivered job=%s chat=%s error=%s", job.id, job.chat_id, exc)
    return Next.FINISHED


TABLE = Table(
    Step("transcribe", step_transcribe, then="script"),
    Step("script", step_script, then="review_script"),
    Step(
        "review_script",
        step_review,
        then="media",
        opens=Gate("script", redoes="script", show=show_script),
    ),
    Step("media", step_media, then="review_images", makes=("voice/", "words/", "image/")),
    Step(
        "review_images",
        step_review,
        then="animate",
        opens=Gate("images", redoes="media", show=show_images),
    ),
    Step("animate", step_animate, then="review_videos", makes=("clip/",)),
    Step(
        "review_videos",
        step_review,
        then="render",
        opens=Gate("videos", redoes="animate", show=show_videos),
    ),
    Step("render", step_render, then="deliver", makes=("out/",)),
    Step("deliver", step_deliver, then=DONE),
)
