"""Scene visuals + soundtrack + captions -> one H.264/AAC MP4.

Each scene's visual is a still (Ken Burns pan) or an animated clip (played, then held on its
last frame when it is shorter than the scene). The soundtrack (voices, music bed, loudness)
and the captions are made by `shared.pipeline.audio` and `.subtitles`.

One encoder process reads the film's frames, raw, on its standard input, burns in the ASS
captions and writes the picture. Meanwhile threads write the captions (before the encoder
starts) and mix the soundtrack, its last pass writing AAC, so that those passes add no time of
their own; a last pass muxes picture and sound, both copied, with the index at the front, while the
thumbnail is taken from the picture. The frames come from one short process per scene, run one
after the other (`shared.pipeline.segments`): each decodes one visual, so the render's memory
does not grow with the number of scenes. Only a scene's tail (the frames
of its cross-fade, 0.5 s) waits in a file for the next scene's process; the rest is spliced
from the scene's pipe into the encoder's as it is made.

Memory (1080p, measured by `python -m bench.render`): x264 takes most of it (~300 MB); its
frame threads and lookahead thread are bounded (X264_THREADS, X264_SYNC_LOOKAHEAD), and so
is the queue of raw frames in front of it (RAW_QUEUE_FRAMES); a scene's process adds
~110-140 MB, the previous one having exited.
"""

from __future__ import annotations

import fcntl
import logging
import os
import subprocess
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable, Sequence

import ffmpeg
from PIL import Image

from shared.errors import BotError, PermanentError, TransientError
from shared.media import FONTS_DIR, ffmpeg_exe, probe
from shared.pipeline.audio import FILM_AUDIO_BITRATE, MusicChoice, mix_soundtrack
from shared.pipeline.segments import (
    SceneRun,
    film_seconds,
    gap_seconds_for,
    is_clip,
    scene_run,
    segments_for,
)
from shared.pipeline.subtitles import scene_starts, write_captions
from shared.pipeline.timings import word_timings
from shared.plan import ScenePlan
from shared.providers.base import Speech, WordTiming

logger = logging.getLogger(__name__)

RENDER_PEAK_MB = 450
"""Peak RSS of one 1080p render, all its ffmpeg processes together, rounded up: 386-448 MB for
6 and 12 scenes (clips, stills, styled), measured by `python -m bench.render` (its
*_1080_peak_rss_mb figures). The worker starts no more renders than its memory holds
(shared/capacity.py)."""
PRESET = "veryfast"
CRF = 23
QUALITY_BITRATE_720P = 2_500_000
MIN_VIDEO_BITRATE = 150_000
CONTAINER_SAFETY = 0.92  # share of max_bytes that audio + video may plan to use
RETRY_SHRINK = 0.8
THUMBNAIL_MAX_SIDE = 320
THUMBNAIL_MAX_BYTES = 200 * 1024
RENDER_TIMEOUT_S = 900
MUX_TIMEOUT_S = 120
BESIDE_NICENESS = 10
"""How far the sound's passes beside the encode yield the CPUs to it: the film is ready when the
encode is, as long as the sound is done by then."""
# glibc raises its mmap threshold when a large block is freed, after which frame buffers come
# from per-thread arenas that never shrink; a fixed threshold keeps them mmapped and returned
# when freed (about 100 MB less peak RSS for a 12-clip 1080p film).
FFMPEG_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072"}
# What ffmpeg says when the machine, not the input, is the problem (ENOMEM, ENOSPC).
RESOURCE_EXHAUSTED = ("Cannot allocate memory", "Out of memory", "No space left on device")
# Raw frames queued between the pipe and the encoder (each 3 MB at 1080p).
RAW_QUEUE_FRAMES = 2
# Pipes of 1 MB (Linux's limit for unprivileged processes) instead of 64 KB: a 1080p frame
# crosses in 3 wake-ups of each side rather than 48.
PIPE_BYTES = 1 << 20
# x264 holds a few full-size frames per frame thread and per frame its lookahead thread runs
# ahead (~12 MB each at 1080p): on 2 cores, beside a scene's process, 2 threads keep up.
X264_THREADS = 2
X264_SYNC_LOOKAHEAD = 2

ProgressCallback = Callable[[float], None]


@dataclass(frozen=True)
class RenderResult:
    path: Path
    duration: float
    width: int
    height: int
    size_bytes: int
    thumbnail: Path


class RenderError(BotError):
    """ffmpeg could not make the video; the message carries the end of its log. Which of the
    two kinds below it is says whether rendering the same inputs again can help."""


class RenderInterrupted(RenderError, TransientError):
    """ffmpeg was killed (by our timeout, or by the kernel out of memory) or ran out of memory
    or disk: a later attempt, on a less busy machine, may well finish."""


class RenderRejected(RenderError, PermanentError):
    """ffmpeg refused the inputs, or the video stays over the size limit at the lower bitrate:
    the same inputs would fail the same way, so the job fails now."""


def video_encoder_options(video_bitrate: int) -> dict[str, Any]:
    """x264 settings: constant quality, with the bitrate capped by `video_bitrate` (VBV)."""
    return {
        "vcodec": "libx264",
        "preset": PRESET,
        "crf": CRF,
        "maxrate": video_bitrate,
        "bufsize": video_bitrate,
        "pix_fmt": "yuv420p",
        "threads": X264_THREADS,
        "x264-params": f"sync-lookahead={X264_SYNC_LOOKAHEAD}",
    }


def video_bitrate_for(duration: float, size: tuple[int, int], max_bytes: int) -> int:
    """Video bits per second so audio + video fit in `max_bytes`, capped at a quality rate
    that follows the picture area (2.5 Mbit/s at 720x1280, 5.6 Mbit/s at 1080x1920)."""
    budget = max_bytes * 8 * CONTAINER_SAFETY / duration - FILM_AUDIO_BITRATE
    area_share = size[0] * size[1] / (720 * 1280)
    quality_cap = QUALITY_BITRATE_720P * max(area_share, 0.25)
    bitrate = int(min(budget, quality_cap))
    if bitrate < MIN_VIDEO_BITRATE:
        raise ValueError(
            f"a {duration:.0f} s video cannot fit in {max_bytes} bytes at a watchable bitrate"
        )
    return bitrate


def _validate(
    plan: ScenePlan,
    visuals: Sequence[Path],
    audios: Sequence[Path],
    durations: Sequence[float],
    size: tuple[int, int],
    fps: int,
    words: Sequence[Sequence[WordTiming]] | None,
) -> None:
    count = len(plan.scenes)
    if not len(visuals) == len(audios) == len(durations) == count:
        raise ValueError(
            f"need one visual, audio and duration per scene: {count} scenes, {len(visuals)} "
            f"visuals, {len(audios)} audios, {len(durations)} durations"
        )
    if words is not None and len(words) != count:
        raise ValueError(f"need one list of word timings per scene: {count} scenes, {len(words)}")
    if any(duration <= 0 for duration in durations):
        raise ValueError(f"voice durations must be positive, got {list(durations)}")
    clips = [str(visual) for visual in visuals if is_clip(visual)]
    if len(set(clips)) < len(clips):
        # Its decoded frames would wait in memory between the scenes that show it.
        raise ValueError("each clip may be shown by one scene only; copy it for another")
    missing = [str(p) for p in [*visuals, *audios] if not Path(p).is_file()]
    if missing:
        raise FileNotFoundError(f"render inputs not found: {', '.join(missing)}")
    width, height = size
    if width < 16 or height < 16 or width % 2 or height % 2:
        raise ValueError(f"video size must be even and at least 16x16, got {width}x{height}")
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")


def build_encoder_command(
    captions: Path | None,
    out_path: Path,
    *,
    size: tuple[int, int],
    fps: int,
    video_bitrate: int,
) -> list[str]:
    """The ffmpeg argument list (binary first) of the encoder: raw yuv420p frames at `size`
    and `fps` read from its standard input, `captions` burned in (none when None), the picture
    alone written to `out_path`."""
    frames = ffmpeg.input(
        "pipe:0",
        format="rawvideo",
        pix_fmt="yuv420p",
        s=f"{size[0]}x{size[1]}",
        framerate=fps,
        thread_queue_size=RAW_QUEUE_FRAMES,
    )
    video = frames.video.filter("setsar", "1")
    if captions is not None:
        video = video.filter("ass", filename=str(captions), fontsdir=str(FONTS_DIR))
    output = ffmpeg.output(video, str(out_path), r=fps, **video_encoder_options(video_bitrate))
    args = (
        output.global_args(
            "-hide_banner", "-nostdin", "-nostats", "-loglevel", "error", "-progress", "pipe:1"
        )
        .overwrite_output()
        .compile()
    )
    return [ffmpeg_exe(), *args[1:]]


def build_mux_command(picture: Path, sound: Path, out_path: Path) -> list[str]:
    """The ffmpeg argument list (binary first) that makes the film of the encoded `picture`
    and `sound` (AAC): both copied as they are, the index at the front (Telegram plays the
    film while it downloads)."""
    output = ffmpeg.output(
        ffmpeg.input(str(picture)).video,
        ffmpeg.input(str(sound)).audio,
        str(out_path),
        codec="copy",
        movflags="+faststart",
    )
    args = output.global_args("-hide_banner", "-nostdin", "-loglevel", "error")
    return [ffmpeg_exe(), *args.overwrite_output().compile()[1:]]


def film_sound(
    audios: Sequence[Path],
    durations: Sequence[float],
    gap: float,
    work_dir: Path,
    music: MusicChoice | None,
) -> Path:
    """The film's sound, the soundtrack of `mix_soundtrack` in AAC. Made beside the picture's
    encode, in a thread of its own that yields the CPUs to the encoder (`_yield_to_encoder`)."""
    _yield_to_encoder()
    return mix_soundtrack(
        audios, durations, gap, work_dir / "soundtrack.m4a", music=music, work_dir=work_dir
    )


def _yield_to_encoder() -> None:
    """Lower this thread's priority (Linux keeps a nice value per thread, and the ffmpeg
    processes it starts inherit it): the sound's passes then take the CPU time the encoder and
    the scenes leave idle, instead of taking turns with them. Best effort."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BESIDE_NICENESS)
    except OSError:
        logger.info("render could not lower the priority of the work beside the encode")


def mux(picture: Path, sound: Path, out_path: Path, timeout_s: float = MUX_TIMEOUT_S) -> None:
    """Run `build_mux_command`; its failure is a RenderError like the encoder's."""
    try:
        completed = subprocess.run(
            build_mux_command(picture, sound, out_path),
            capture_output=True,
            timeout=timeout_s,
            env={**os.environ, **FFMPEG_ENV},
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise RenderInterrupted(f"muxing took over {timeout_s:.0f} s") from None
    if completed.returncode != 0:
        log_tail = completed.stderr.decode(errors="replace")[-1500:]
        raise _ffmpeg_failure(completed.returncode, timeout_s, log_tail)


def scene_runs(
    visuals: Sequence[Path],
    durations: Sequence[float],
    work_dir: Path,
    *,
    size: tuple[int, int],
    fps: int,
) -> list[SceneRun]:
    """One ffmpeg process per scene (see shared.pipeline.segments), to be run in order:
    together they make the whole film's picture."""
    segments = segments_for(durations, fps)
    try:
        return [
            scene_run(visuals, segments, index, work_dir, size, fps)
            for index in range(len(visuals))
        ]
    except ValueError as error:  # a clip that is not a media file: rendering again cannot help
        raise RenderRejected(str(error)) from None


def _move(source: int, target: int, count: int) -> int:
    """Move up to `count` bytes from the pipe `source` to `target` in the kernel (splice, no
    copy through Python); fewer only when `source` ends first. Returns the bytes moved."""
    moved = 0
    while moved < count:
        step = os.splice(source, target, count - moved)
        if step == 0:
            break
        moved += step
    return moved


class _SceneFeed(threading.Thread):
    """Runs the scene processes one after the other: each one's film frames go into `sink`
    (the encoder's standard input), its tail into its tail file. Closes `sink` after the last
    so the encoder sees the end. On a failure it calls `on_failure` and starts no other."""

    def __init__(
        self,
        scenes: Sequence[SceneRun],
        sink: IO[bytes],
        log: IO[bytes],
        on_failure: Callable[[], None],
    ) -> None:
        super().__init__(name="render-scenes", daemon=True)
        self._scenes = scenes
        self._sink = sink
        self._log = log
        self._on_failure = on_failure
        self._lock = threading.Lock()
        self._current: subprocess.Popen[bytes] | None = None
        self._stopped = False
        self.failure: tuple[int, str] | None = None  # (exit status, what went wrong)

    def run(self) -> None:
        try:
            for index, scene in enumerate(self._scenes):
                failure = self._run(index, scene)
                if failure is not None:
                    self.failure = failure
                    self._on_failure()
                    return
        finally:
            self._sink.close()

    def _run(self, index: int, scene: SceneRun) -> tuple[int, str] | None:
        with self._lock:
            if self._stopped:
                return None
            self._current = process = subprocess.Popen(
                scene.command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=self._log,
                env={**os.environ, **FFMPEG_ENV},
            )
        assert process.stdout is not None
        with process:
            source = process.stdout.fileno()
            fcntl.fcntl(source, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
            try:
                moved = _move(source, self._sink.fileno(), scene.film_bytes)
                if scene.tail is not None:
                    with open(scene.tail, "wb") as tail:
                        moved += _move(source, tail.fileno(), scene.tail_bytes)
            except BrokenPipeError:  # the encoder is gone; its own exit says why
                process.kill()
                return -1, "the encoder stopped reading"
            while os.read(source, 1 << 16):  # nothing is expected: let it finish
                pass
            returncode = process.wait()
        expected = scene.film_bytes + scene.tail_bytes
        if returncode != 0:
            return returncode, f"scene {index} exited {returncode}"
        if moved != expected:
            return 1, f"scene {index} wrote {moved} of its {expected} bytes of frames"
        return None

    def stop(self) -> None:
        """Kill the running scene process and start no other."""
        with self._lock:
            self._stopped = True
            if self._current is not None and self._current.poll() is None:
                self._current.kill()


def run_piped(
    scenes: Sequence[SceneRun],
    encoder: list[str],
    total_seconds: float,
    log_path: Path,
    progress: ProgressCallback | None = None,
    timeout_s: float = RENDER_TIMEOUT_S,
) -> None:
    """Run the `encoder` ffmpeg (raw frames on its standard input, `-progress pipe:1`) while
    the `scenes` processes, one at a time, write their frames into it; call
    `progress(done share)` at each of the encoder's reports (every 0.5 s). The encoder's log
    goes to `log_path`, the scenes' next to it. Kill them all after `timeout_s`."""
    scenes_log_path = log_path.with_name(f"{log_path.stem}_scenes{log_path.suffix}")
    with (
        open(log_path, "wb") as log,
        open(scenes_log_path, "wb") as scenes_log,
        subprocess.Popen(
            encoder,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            env={**os.environ, **FFMPEG_ENV},
        ) as process,
    ):
        assert process.stdin is not None and process.stdout is not None
        fcntl.fcntl(process.stdin.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        feed = _SceneFeed(scenes, process.stdin, scenes_log, on_failure=process.kill)

        def stop() -> None:
            feed.stop()
            process.kill()

        watchdog = threading.Timer(timeout_s, stop)
        feed.start()
        watchdog.start()
        try:
            for line in process.stdout:
                key, _, value = line.decode("ascii", "replace").strip().partition("=")
                if key == "out_time_us" and value.isdigit() and progress is not None:
                    progress(min(int(value) / 1_000_000 / total_seconds, 1.0))
            returncode = process.wait()
        except BaseException:  # the job was cancelled or lost its lease mid-render: stop now
            stop()
            raise
        finally:
            watchdog.cancel()
            feed.join()
    if returncode > 0 or (returncode < 0 and feed.failure is None):
        raise _ffmpeg_failure(returncode, timeout_s, log_path.read_text(errors="replace")[-1500:])
    if feed.failure is not None:
        scene_returncode, what = feed.failure
        log_tail = scenes_log_path.read_text(errors="replace")[-1500:]
        raise _ffmpeg_failure(scene_returncode, timeout_s, f"{what}: {log_tail}")


def run_ffmpeg(
    args: list[str],
    total_seconds: float,
    log_path: Path,
    progress: ProgressCallback | None = None,
    timeout_s: float = RENDER_TIMEOUT_S,
) -> None:
    """Run ffmpeg with `-progress pipe:1` among `args`, calling `progress(done share)` at each
    report (every 0.5 s); its log goes to `log_path`. Kill it after `timeout_s`."""
    with (
        open(log_path, "wb") as log,
        subprocess.Popen(
            args,
            stdout=subprocess.PIPE,
            stderr=log,
            stdin=subprocess.DEVNULL,
            text=True,
            env={**os.environ, **FFMPEG_ENV},
        ) as process,
    ):
        watchdog = threading.Timer(timeout_s, process.kill)
        watchdog.start()
        try:
            for line in process.stdout or ():
                key, _, value = line.strip().partition("=")
                if key == "out_time_us" and value.isdigit() and progress is not None:
                    progress(min(int(value) / 1_000_000 / total_seconds, 1.0))
            returncode = process.wait()
        except BaseException:  # the job was cancelled or lost its lease mid-render: stop now
            process.kill()
            raise
        finally:
            watchdog.cancel()
    if returncode != 0:
        raise _ffmpeg_failure(returncode, timeout_s, log_path.read_text(errors="replace")[-1500:])


def _ffmpeg_failure(returncode: int, timeout_s: float, log_tail: str) -> RenderError:
    """Transient when ffmpeg was killed by a signal (our watchdog, the OOM killer) or says it
    ran out of memory or disk; any other failing exit is taken to be about the inputs."""
    if returncode < 0:
        return RenderInterrupted(
            f"ffmpeg was killed by signal {-returncode} (the {timeout_s:.0f} s limit, or out of "
            f"memory): {log_tail}"
        )
    if any(marker in log_tail for marker in RESOURCE_EXHAUSTED):
        return RenderInterrupted(f"ffmpeg ran out of resources (exit {returncode}): {log_tail}")
    return RenderRejected(f"ffmpeg exited {returncode}: {log_tail}")


def _make_thumbnail(video: Path, at_seconds: float, work_dir: Path, out_path: Path) -> Path:
    """A JPEG of one frame, at most THUMBNAIL_MAX_SIDE px on its long side (Telegram's rule)."""
    frame_path = work_dir / "thumbnail_frame.png"
    subprocess.run(
        [
            ffmpeg_exe(),
            "-hide_banner",
            "-nostdin",
            "-loglevel",
            "error",
            "-y",
            "-ss",
            f"{at_seconds:.3f}",
            "-i",
            str(video),
            "-frames:v",
            "1",
            str(frame_path),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    with Image.open(frame_path) as frame:
        picture = frame.convert("RGB")
    picture.thumbnail((THUMBNAIL_MAX_SIDE, THUMBNAIL_MAX_SIDE), Image.LANCZOS)
    for quality in (85, 70, 55, 40):
        picture.save(out_path, format="JPEG", quality=quality, optimize=True)
        if out_path.stat().st_size <= THUMBNAIL_MAX_BYTES:
            break
    return out_path


def _captions(
    plan: ScenePlan,
    audios: Sequence[Path],
    durations: Sequence[float],
    gap: float,
    words: Sequence[Sequence[WordTiming]] | None,
    size: tuple[int, int],
    caption_style: str,
    work_dir: Path,
) -> Path | None:
    """The film's ASS captions (None when they are off), from `words` or timings estimated
    from the voices."""
    if caption_style == "off":
        return None
    return write_captions(
        plan.scenes,
        words if words is not None else _estimated_words(plan, audios, durations),
        scene_starts(durations, gap),
        size,
        caption_style,
        work_dir / "captions.ass",
    )


def _estimated_words(
    plan: ScenePlan, audios: Sequence[Path], durations: Sequence[float]
) -> list[list[WordTiming]]:
    """Word timings shared evenly over each voice, for callers that have none stored."""
    return [
        word_timings(Speech(duration), scene.narration, audio, plan.language)
        for scene, audio, duration in zip(plan.scenes, audios, durations)
    ]


def _encode_film(
    scenes: Sequence[SceneRun],
    captions: Path | None,
    sound: Future[Path],
    background: ThreadPoolExecutor,
    out_path: Path,
    *,
    size: tuple[int, int],
    fps: int,
    total_seconds: float,
    thumbnail_at: float,
    work_dir: Path,
    progress: ProgressCallback | None,
    max_bytes: int,
) -> tuple[int, Path]:
    """Encode the picture and mux it with the sound once that is made, the thumbnail taken
    from the picture meanwhile; once more at a proportionally lower bitrate when the film is
    over `max_bytes`. Returns the film's bytes and the thumbnail."""
    done = 0.0

    def report(share: float) -> None:
        """Progress never goes back, not even when a second attempt starts from zero."""
        nonlocal done
        done = max(done, share)
        if progress is not None:
            progress(done)

    def encode(video_bitrate: int, attempt: int) -> tuple[int, Path]:
        picture = work_dir / "picture.mp4"
        encoder = build_encoder_command(
            captions, picture, size=size, fps=fps, video_bitrate=video_bitrate
        )
        logger.info("render encoding attempt=%d video_bitrate=%d", attempt, video_bitrate)
        run_piped(scenes, encoder, total_seconds, work_dir / f"ffmpeg_{attempt}.log", report)
        thumbnail = background.submit(
            _make_thumbnail,
            picture,
            thumbnail_at,
            work_dir,
            out_path.with_name(f"{out_path.stem}_thumb.jpg"),
        )
        mux(picture, sound.result(), out_path)
        return out_path.stat().st_size, thumbnail.result()

    bitrate = video_bitrate_for(total_seconds, size, max_bytes)
    size_bytes, thumbnail = encode(bitrate, attempt=1)
    if size_bytes > max_bytes:
        bitrate = int(bitrate * max_bytes / size_bytes * RETRY_SHRINK)
        logger.warning(
            "render too large size_bytes=%d max_bytes=%d retry_video_bitrate=%d",
            size_bytes,
            max_bytes,
            bitrate,
        )
        size_bytes, thumbnail = encode(bitrate, attempt=2)
        if size_bytes > max_bytes:
            raise RenderRejected(f"video is {size_bytes} bytes, over the {max_bytes} byte limit")
    report(1.0)
    return size_bytes, thumbnail


def render_video(
    plan: ScenePlan,
    visuals: list[Path],
    audios: list[Path],
    durations: list[float],
    out_path: Path,
    *,
    size: tuple[int, int] = (720, 1280),
    fps: int = 30,
    work_dir: Path,
    progress: ProgressCallback | None = None,
    max_bytes: int = 50 * 1024 * 1024,
    words: Sequence[Sequence[WordTiming]] | None = None,
    caption_style: str = "karaoke",
    music: MusicChoice | None = None,
) -> RenderResult:
    """Render the plan's scene visuals (stills or clips, see `is_clip`) and voices into
    `out_path` (MP4) with the soundtrack of `mix_soundtrack` and captions in `caption_style`.

    `durations` are the real seconds of each voice file; `words` the timings of each scene's
    words relative to its voice (estimated from the durations when None). If the file still
    comes out larger than `max_bytes`, its picture is encoded once more at a proportionally
    lower bitrate. The thumbnail is written next to `out_path`; intermediate files go to
    `work_dir`.
    """
    _validate(plan, visuals, audios, durations, size, fps, words)
    out_path, work_dir = Path(out_path), Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    gap = gap_seconds_for(durations)
    total_seconds = film_seconds(durations)
    with ThreadPoolExecutor(max_workers=3, thread_name_prefix="render-beside") as background:
        sound = background.submit(film_sound, audios, durations, gap, work_dir, music)
        captions = background.submit(
            _captions, plan, audios, durations, gap, words, size, caption_style, work_dir
        )
        scenes = scene_runs(visuals, durations, work_dir, size=size, fps=fps)
        logger.info(
            "render started scenes=%d clips=%d size=%dx%d seconds=%.2f captions=%s music=%s",
            len(visuals),
            sum(1 for visual in visuals if is_clip(visual)),
            size[0],
            size[1],
            total_seconds,
            caption_style,
            music.source if music is not None else "off",
        )
        size_bytes, thumbnail = _encode_film(
            scenes,
            captions.result(),
            sound,
            background,
            out_path,
            size=size,
            fps=fps,
            total_seconds=total_seconds,
            thumbnail_at=durations[0] / 2,
            work_dir=work_dir,
            progress=progress,
            max_bytes=max_bytes,
        )
    info = probe(out_path)
    logger.info(
        "render finished path=%s seconds=%.2f size_bytes=%d wall_s=%.2f",
        out_path,
        info.duration,
        size_bytes,
        time.monotonic() - started,
    )
    return RenderResult(
        path=out_path,
        duration=info.duration,
        width=info.width or size[0],
        height=info.height or size[1],
        size_bytes=size_bytes,
        thumbnail=thumbnail,
    )
