"""The step `media` and the images gate: a voice-over and a still per scene, made side by side,
and the storyboard of the stills.

Voices are spoken in VOICE_CONCURRENCY threads (their word timings too) while the stills are
drawn; every still is asked for at once:
- Runway (`RemoteVisuals`): text_to_image tasks through the engine of
  shared/pipeline/remote_tasks.py, durable and paid for once, parked on rather than slept on;
- a synchronous paid provider (OpenAI gpt-image-1, 30-60 s a picture): calls in threads, at most
  IMAGE_CONCURRENCY in flight per provider across all jobs and workers, each with its row in
  remote_tasks (kind 'still') written before the request and ended by its outcome, so that a
  still whose answer was saved is never asked for again, and one whose answer may have been
  lost (`uncertain`) is never asked for again unasked;
- the local cards: drawn in threads, free, no rows.
Threads only call providers and return what they made: every database write (the job's one
connection) stays on the job's thread.

A still whose task failed, or whose outcome is unknown, becomes the free local card, so the film
has every scene; the user is told which scenes (in the storyboard's caption, or in a message
when the images gate is off), and only a 🔁 at the images gate (a new variant) pays again. The
storyboard is drawn as soon as the stills are in, while the last voices may still be spoken.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType, TracebackType

from shared import queue
from shared.costs import chosen, speech_units
from shared.errors import (
    OutcomeUnknown,
    OwnerActionNeeded,
    PermanentError,
    TransientError,
)
from shared.media import audio_duration
from shared.pipeline import timings
from shared.pipeline.job import JobContext
from shared.pipeline.remote_tasks import (
    MAX_UNSENT,
    Pending,
    RemoteWork,
    Settled,
    park,
    run_remote,
    settle_stale,
    should_park,
)
from shared.pipeline.storyboard import make_storyboard
from shared.pipeline.table import Next
from shared.pipeline.timings import word_timings
from shared.plan import ScenePlan
from shared.providers.base import RemoteVisuals, Speech, VisualsProvider, WordTiming
from shared.telegram import TelegramError
from shared.texts import t

log = logging.getLogger(__name__)

SYNCHRONOUS_HANDLE = {"id": None, "synchronous": True}
"""The handle of a synchronous call's row: there is nothing to poll."""


def still_name(scene: int) -> str:
    """The artifact that holds scene `scene`'s still."""
    return f"image/{scene:02d}.png"


def storyboard_name(variant: int) -> str:
    """The artifact that holds the storyboard of the stills of `variant`."""
    return f"board/storyboard-{variant:02d}.jpg"


def _steps() -> ModuleType:
    """shared.pipeline.steps, whose TABLE puts this step in order and which imports this
    module for it: imported when a step runs, not when this module loads."""
    from shared.pipeline import steps

    return steps


def step_media(ctx: JobContext) -> Next:
    """A voice-over and a still per scene, side by side. Voices and stills already made (and
    paid for) survive a retry; only a storyboard regeneration, which asks for a new variant,
    draws the stills again (for the same voices)."""
    steps = _steps()
    plan = ctx.plan()
    variant = steps._revision(ctx, "images").get("count", 0)
    with ctx.work_dir() as tmp, Voices(ctx, plan, Path(tmp)) as voices:
        work = Path(tmp)
        stills = _make_stills(ctx, plan, variant, work, voices)
        if isinstance(stills, Pending):
            voices.finish()
            park(ctx, stills)
            return Next.PARKED
        _draw_fallback(ctx, plan, variant, stills.fallback, work)
        if "images" in ctx.settings.approval_gates:
            _save_storyboard(ctx, plan, variant, work)
        durations = voices.finish()
    log.info(
        "media made job=%s scenes=%s stills_fallback=%s",
        ctx.job.id,
        len(plan.scenes),
        ",".join(map(str, stills.fallback)) or "-",
    )
    if stills.fallback and "images" not in ctx.settings.approval_gates:
        _tell_fallback(ctx, stills.fallback)
    result = {"durations": durations, "stills_variant": variant, "stills_fallback": stills.fallback}
    return steps._advance(ctx, result)


def show_images(ctx: JobContext, keyboard: dict) -> dict | None:
    """The images gate: a storyboard, a contact sheet of the stills, one numbered frame per
    scene (drawn by `media` as soon as its stills were in), with the scenes whose picture could
    not be made named in the caption."""
    plan = ctx.plan()
    stills = _steps()._files(ctx, "image/", len(plan.scenes))
    if stills is None:
        return None
    made = ctx.job.checkpoints.get("media") or {}
    board = storyboard_name(made.get("stills_variant", 0))
    with ctx.work_dir() as tmp:
        work = Path(tmp)
        saved = queue.load_artifacts(ctx.db, ctx.job.id, board)
        sheet = work / "storyboard.jpg"
        if board in saved:
            sheet.write_bytes(saved[board])
        else:
            _draw_storyboard(plan, stills, work, sheet)
        caption = t("storyboard_caption", ctx.language, title=plan.title, scenes=len(plan.scenes))
        fallback = made.get("stills_fallback", [])
        if fallback:
            scenes = _scene_numbers(fallback)
            caption = f"{caption}\n{t('images_fallback', ctx.language, scenes=scenes)}"
        return ctx.telegram.send_photo(
            ctx.job.chat_id, sheet, caption=caption, reply_markup=keyboard
        )


def _scene_numbers(scenes: list[int]) -> str:
    return ", ".join(str(scene + 1) for scene in scenes)


def _draw_storyboard(plan: ScenePlan, stills: dict[str, bytes], work: Path, out: Path) -> None:
    images = []
    for scene in range(len(plan.scenes)):
        path = work / f"board-{scene:02d}.png"
        path.write_bytes(stills[still_name(scene)])
        images.append(path)
    # Each tile is labelled with its scene's words: with captions on, the cards carry none.
    labels = [scene.on_screen_text or scene.narration for scene in plan.scenes]
    make_storyboard(images, out, labels=labels)


def _save_storyboard(ctx: JobContext, plan: ScenePlan, variant: int, work: Path) -> None:
    stills = queue.load_artifacts(ctx.db, ctx.job.id, "image/")
    sheet = work / "storyboard.jpg"
    _draw_storyboard(plan, stills, work, sheet)
    ctx.check()
    queue.save_artifact(ctx.db, ctx.job, storyboard_name(variant), sheet.read_bytes())


def _tell_fallback(ctx: JobContext, scenes: list[int]) -> None:
    """With the images gate off, the user still learns which scenes are plain cards; best
    effort, as the film goes on either way."""
    text = t("stills_fallback", ctx.language, job_id=ctx.job.id, scenes=_scene_numbers(scenes))
    try:
        ctx.telegram.send_message(ctx.job.chat_id, text)
    except (TelegramError, TransientError) as exc:
        log.warning("stills fallback notice not delivered job=%s error=%s", ctx.job.id, exc)


# ---- stills ---------------------------------------------------------------------------------


def _make_stills(
    ctx: JobContext, plan: ScenePlan, variant: int, work: Path, voices: Voices
) -> Settled | Pending:
    visuals = ctx.providers.visuals
    if hasattr(visuals, "submit"):
        return _draw_remotely(ctx, visuals, plan, variant, work, voices)
    if chosen(ctx.settings, "visuals")[0] == "local":  # free: no rows, nothing to pay twice
        return _draw_locally(ctx, visuals, plan, variant, work)
    return _draw_synchronously(ctx, visuals, plan, variant, work, voices)


def _progress(ctx: JobContext, scenes: int, done: int) -> None:
    ctx.status.show("progress_images", pct=100 * done // scenes)


def _draw_locally(
    ctx: JobContext, visuals: VisualsProvider, plan: ScenePlan, variant: int, work: Path
) -> Settled:
    """The free local cards, drawn side by side (cheap enough to draw again on a retry)."""
    scenes = len(plan.scenes)
    size = ctx.settings.video_size

    def draw(scene: int) -> Path:
        out = work / f"image-{scene:02d}.png"
        visuals.draw(plan, scene, size, out, variant=variant)
        return out

    with ThreadPoolExecutor(ctx.settings.image_concurrency, thread_name_prefix="still") as pool:
        paths = list(pool.map(draw, range(scenes)))
    for scene, path in enumerate(paths):
        ctx.check()
        queue.save_artifact(ctx.db, ctx.job, still_name(scene), path.read_bytes())
    return Settled(list(range(scenes)), [])


def _draw_remotely(
    ctx: JobContext,
    visuals: RemoteVisuals,
    plan: ScenePlan,
    variant: int,
    work: Path,
    voices: Voices,
) -> Settled | Pending:
    """Runway text_to_image tasks, all submitted at once; voices are saved between polls."""
    scenes = len(plan.scenes)
    size = ctx.settings.video_size
    remote = RemoteWork(
        provider=visuals,
        key=queue.RemoteTaskKey(visuals.name, visuals.model, variant, 0, "still"),
        scenes=scenes,
        artifact=still_name,
        submit=lambda scene: visuals.submit(plan, scene, size, variant),
        download=lambda status, out: visuals.download(status, size, out),
        cost="visuals",
        units=lambda scene: {"images": 1},
        billed_seconds=lambda scene: None,
        slots=ctx.settings.image_concurrency,
        progress=lambda done: _progress(ctx, scenes, done),
    )
    return run_remote(ctx, remote, work, idle=voices.idle)


@dataclass
class _Call:
    """A synchronous still in flight: its scene, its row, its attempt and where it is drawn."""

    scene: int
    task_id: int
    attempt: int
    out: Path


def _draw_synchronously(
    ctx: JobContext,
    visuals: VisualsProvider,
    plan: ScenePlan,
    variant: int,
    work: Path,
    voices: Voices,
) -> Settled | Pending:
    """Paid synchronous calls side by side, each recorded before it is sent and ended by its
    outcome. A call that cannot start (the provider's slots are taken by other jobs) waits, or
    the job parks when the run has no time left."""
    job = ctx.job
    scenes = len(plan.scenes)
    key = queue.RemoteTaskKey(*chosen(ctx.settings, "visuals"), variant, 0, "still")
    settle_stale(ctx)
    saved = queue.artifact_names(ctx.db, job.id, "image/")
    made: list[int] = []
    fallback: list[int] = []
    todo: dict[int, int] = {}  # scene → the attempt to make
    unsent: dict[int, int] = {}
    tasks = queue.remote_tasks(ctx.db, job.id, key)
    for scene in range(scenes):
        task = tasks.get(scene)
        state = task["state"] if task else None
        if task is None or (state == "unsent" and task["unsent"] < MAX_UNSENT):
            todo[scene] = task["attempt"] + 1 if task else 1
            unsent[scene] = task["unsent"] if task else 0
        elif state == "succeeded" and still_name(scene) in saved:
            made.append(scene)
        else:  # failed, uncertain, unsent too often, or its picture is gone: never asked again
            fallback.append(scene)
    running: dict[Future[None], _Call] = {}
    stop: BaseException | None = None
    poll = ctx.settings.animation_poll_seconds
    with ThreadPoolExecutor(ctx.settings.image_concurrency, thread_name_prefix="still") as pool:
        while running or (todo and stop is None):
            try:
                _start_calls(ctx, visuals, plan, variant, key, todo, running, pool, work)
            except PermanentError as exc:  # a cost limit: end what runs, then stop
                stop, todo = exc, {}
            if not running and stop is not None:
                break
            if not running:  # every slot of the provider is taken by other jobs' stills
                if should_park(ctx, poll):
                    return Pending(len(todo))
                voices.idle(poll)
                ctx.check()
                continue
            done, _ = wait([*running, *voices.pending], return_when=FIRST_COMPLETED)
            voices.collect()
            for future in [future for future in done if future in running]:
                call = running.pop(future)
                outcome = _end_call(ctx, key, call, future)
                if outcome == "succeeded":
                    made.append(call.scene)
                elif outcome == "unsent" and unsent[call.scene] + 1 < MAX_UNSENT and not stop:
                    unsent[call.scene] += 1
                    todo[call.scene] = call.attempt + 1
                else:
                    fallback.append(call.scene)
                if isinstance(future.exception(), OwnerActionNeeded) and stop is None:
                    stop, todo = future.exception(), {}
                _progress(ctx, scenes, len(made))
    if stop is not None:
        raise stop
    return Settled(sorted(made), sorted(fallback))


def _start_calls(
    ctx: JobContext,
    visuals: VisualsProvider,
    plan: ScenePlan,
    variant: int,
    key: queue.RemoteTaskKey,
    todo: dict[int, int],
    running: dict[Future[None], _Call],
    pool: ThreadPoolExecutor,
    work: Path,
) -> None:
    """Start the waiting calls, each once its row holds a slot, until none is free. The cost
    limits count the calls in flight as spent."""
    size = ctx.settings.video_size
    for scene in sorted(todo):
        ctx.meter.check("visuals", {"images": len(running) + 1})
        task_id = queue.begin_remote_task(
            ctx.db,
            ctx.job,
            key,
            scene,
            todo[scene],
            slots=ctx.settings.image_concurrency,
            timeout_seconds=ctx.settings.animation_timeout_seconds,
        )
        if task_id is None:
            return
        call = _Call(scene, task_id, todo.pop(scene), work / f"image-{scene:02d}.png")
        running[pool.submit(visuals.draw, plan, scene, size, call.out, variant)] = call


def _end_call(ctx: JobContext, key: queue.RemoteTaskKey, call: _Call, future: Future[None]) -> str:
    """Record how call `call` ended; its picture, when it answered, saved first. Returns the
    state its row ended in."""
    job = ctx.job
    context = (
        f"job={job.id} step={job.step} scene={call.scene} provider={key.provider} "
        f"task={call.task_id}"
    )
    error = future.exception()
    if error is None:
        ctx.check()
        queue.save_artifact(ctx.db, job, still_name(call.scene), call.out.read_bytes())
        units = {"images": 1}
        usd = ctx.meter.price("visuals", units)
        queue.remote_task_answered(ctx.db, job, call.task_id, SYNCHRONOUS_HANDLE, usd)
        ctx.meter.record("visuals", units)
        log.info("still drawn %s attempt=%s", context, call.attempt)
        return "succeeded"
    if isinstance(error, OutcomeUnknown):
        state = "uncertain"
    elif isinstance(error, (OwnerActionNeeded, TransientError)):  # surely never reached
        state = "unsent"
    elif isinstance(error, PermanentError):
        state = "failed"
    else:  # not the provider's answer (a bug, a full disk): the picture may have been paid for
        queue.end_remote_task(ctx.db, job, call.task_id, "uncertain", repr(error))
        raise error
    queue.end_remote_task(ctx.db, job, call.task_id, state, str(error))
    log.warning("still %s %s attempt=%s error=%s", state, context, call.attempt, error)
    return state


def _draw_fallback(
    ctx: JobContext, plan: ScenePlan, variant: int, scenes: list[int], work: Path
) -> None:
    """The free local card for each scene whose picture could not be made."""
    if not scenes:
        return
    # Imported here: a set-up whose pictures all come from a provider never loads local code.
    from shared.providers.local_visuals import LocalVisuals

    cards = LocalVisuals(show_words=ctx.settings.caption_style == "off")
    for scene in scenes:
        out = work / f"card-{scene:02d}.png"
        cards.draw(plan, scene, ctx.settings.video_size, out, variant=variant)
        ctx.check()
        queue.save_artifact(ctx.db, ctx.job, still_name(scene), out.read_bytes())


# ---- voices ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Voice:
    """What a voice thread made for a scene: its seconds, and what is to be saved (None: kept
    already)."""

    scene: int
    seconds: float
    audio: bytes | None
    spoken: bool
    words: list[WordTiming] | None


class Voices:
    """The scenes' voice-overs, spoken in VOICE_CONCURRENCY threads from the moment the step
    starts, each with its word timings; the job's thread saves each as it comes (`collect`,
    `idle`) and all of them at the end (`finish`). A voice and its timings already saved are
    not made again; the threads of a step that stops early are waited for, and what they made
    is dropped (nothing is written after the step stopped)."""

    def __init__(self, ctx: JobContext, plan: ScenePlan, work: Path) -> None:
        self._ctx = ctx
        self._plan = plan
        self._work = work
        self._durations: dict[int, float] = {}
        self._error: BaseException | None = None
        self._failed = threading.Event()
        self._pool = ThreadPoolExecutor(ctx.settings.voice_concurrency, thread_name_prefix="voice")
        self._futures: list[Future[_Voice | None]] = []

    def __enter__(self) -> Voices:
        ctx = self._ctx
        made = queue.load_artifacts(ctx.db, ctx.job.id, "voice/")
        timed = queue.artifact_names(ctx.db, ctx.job.id, "words/")
        to_speak = [
            scene.narration
            for index, scene in enumerate(self._plan.scenes)
            if _voice_name(index) not in made
        ]
        if to_speak:
            ctx.meter.check("voice", speech_units(" ".join(to_speak)))
        for index in range(len(self._plan.scenes)):
            audio = made.get(_voice_name(index))
            self._futures.append(
                self._pool.submit(self._attempt, index, audio, _words_name(index) in timed)
            )
        return self

    def __exit__(
        self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    @property
    def pending(self) -> list[Future[_Voice | None]]:
        return list(self._futures)

    def _attempt(self, index: int, audio: bytes | None, timed: bool) -> _Voice | None:
        """In a thread: `_make`, unless a voice has failed already (None): the step fails
        then, so the voices not begun are left to its retry."""
        if self._failed.is_set():
            return None
        try:
            return self._make(index, audio, timed)
        except BaseException:
            self._failed.set()
            raise

    def _make(self, index: int, audio: bytes | None, timed: bool) -> _Voice:
        """In a thread: the scene's voice (spoken unless `audio` was saved) and its timings
        (unless `timed`). No database here."""
        ctx, scene = self._ctx, self._plan.scenes[index]
        path = self._work / f"voice-{index:02d}.wav"
        if audio is not None:
            path.write_bytes(audio)
            if timed:
                return _Voice(index, audio_duration(path), None, False, None)
            speech = Speech(audio_duration(path))  # spoken before the timings were kept
        else:
            speech = ctx.providers.voice.speak(scene.narration, ctx.language, path)
        words = word_timings(speech, scene.narration, path, ctx.language, ctx.providers.transcriber)
        made = None if audio is not None else path.read_bytes()
        return _Voice(index, speech.seconds, made, audio is None, words)

    def collect(self) -> None:
        """Save the voices whose threads are done (on the job's thread)."""
        for future in [future for future in self._futures if future.done()]:
            self._futures.remove(future)
            error = future.exception()
            if error is not None:
                if self._error is None:
                    self._error = error
                continue
            voice = future.result()
            if voice is not None:
                self._save(voice)

    def idle(self, seconds: float) -> None:
        """Wait `seconds`, saving voices as they come."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if not self._futures:
                time.sleep(left)
                return
            wait(self._futures, timeout=left, return_when=FIRST_COMPLETED)
            self.collect()

    def finish(self) -> list[float]:
        """Wait for every voice and save it; each scene's seconds. Raises the first error a
        voice met, once the others are saved."""
        wait(self._futures)
        self.collect()
        if self._error is not None:
            raise self._error
        return [self._durations[index] for index in range(len(self._plan.scenes))]

    def _save(self, voice: _Voice) -> None:
        ctx = self._ctx
        if voice.spoken:
            narration = self._plan.scenes[voice.scene].narration
            ctx.meter.record("voice", speech_units(narration, voice.seconds))
        if voice.audio is not None:
            ctx.check()
            queue.save_artifact(ctx.db, ctx.job, _voice_name(voice.scene), voice.audio)
        if voice.words is not None:
            ctx.check()
            queue.save_artifact(
                ctx.db, ctx.job, _words_name(voice.scene), timings.dumps(voice.words)
            )
        self._durations[voice.scene] = voice.seconds
        log.info("voice made job=%s scene=%s seconds=%.2f", ctx.job.id, voice.scene, voice.seconds)


def _voice_name(scene: int) -> str:
    return f"voice/{scene:02d}.wav"


def _words_name(scene: int) -> str:
    return f"words/{scene:02d}.json"
