"""Scene visuals + soundtrack + captions -> one H.264/AAC MP4, in a single ffmpeg pass.

Each scene's visual is a still (Ken Burns pan) or an animated clip (played, then held on its
last frame when it is shorter than the scene). The soundtrack (voices, music bed, loudness)
and the captions are made beforehand by `shared.pipeline.audio` and `.subtitles`; this pass
only maps the finished WAV and burns in the ASS file.

Cost model (measured on 2 cores, see bench/render.py): x264 dominates, so the filter graph
is kept close to free.
- Each still is decoded once and repeated by the `loop` filter (frame references, no copies).
- Ken Burns motion is a slow diagonal pan: a moving `crop` window over the still, scaled once
  to MOTION_SCALE times the frame. Crop is a pointer offset per frame, whereas zoompan or a
  per-frame scale resample every frame.
- A clip is read only as far as its scene needs (`-t`); its frames are scaled once, on
  whichever side of the frame-rate conversion has fewer of them, and its held tail is
  `tpad` clones (frame references).
- xfade processes every frame passing through it, so only the short overlaps go through it
  and the rest of each scene is concatenated untouched.
- Memory: x264 takes ~300 MB at 1080p and every clip about 40 MB more (its decoder's and its
  scale's frame pools live until ffmpeg exits), so a 6-clip 1080p film peaks near 600 MB.

Timeline: scene i's voice starts after the earlier voices, each followed by a short gap of
silence (`gap_seconds_for`); its picture is on screen from then on and cross-fades are
centred on those boundaries. Cuts are placed on whole frames of the film's clock, so the
video lasts as long as the soundtrack to within half a frame.
"""

from __future__ import annotations

import logging
import os
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import ffmpeg
from PIL import Image

from shared.errors import BotError, PermanentError, TransientError
from shared.media import FONTS_DIR, ffmpeg_exe, probe
from shared.pipeline.audio import MusicChoice, mix_soundtrack
from shared.pipeline.subtitles import scene_starts, write_captions
from shared.pipeline.timings import word_timings
from shared.plan import ScenePlan
from shared.providers.base import Speech, WordTiming

logger = logging.getLogger(__name__)

CLIP_SUFFIXES = (".mp4", ".mov", ".webm", ".mkv")  # any other visual is taken to be a still
GAP_SECONDS = 0.25
MAX_GAP_SHARE = 0.05  # all gaps together stay under this share of the voice time
CROSSFADE_SECONDS = 0.5
MOTION_SCALE = 1.12
PAN_START, PAN_END = 0.15, 0.85  # share of the spare margin the pan travels through
PRESET = "veryfast"
CRF = 23
AUDIO_BITRATE = 96_000
QUALITY_BITRATE_720P = 2_500_000
MIN_VIDEO_BITRATE = 150_000
CONTAINER_SAFETY = 0.92  # share of max_bytes that audio + video may plan to use
RETRY_SHRINK = 0.8
THUMBNAIL_MAX_SIDE = 320
THUMBNAIL_MAX_BYTES = 200 * 1024
RENDER_TIMEOUT_S = 900
# glibc raises its mmap threshold when a large block is freed, after which frame buffers come
# from per-thread arenas that never shrink; a fixed threshold keeps them mmapped and returned
# when freed (about 100 MB less peak RSS for a 12-clip 1080p film).
FFMPEG_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072"}
# What ffmpeg says when the machine, not the input, is the problem (ENOMEM, ENOSPC).
RESOURCE_EXHAUSTED = ("Cannot allocate memory", "Out of memory", "No space left on device")

ProgressCallback = Callable[[float], None]
Stream = ffmpeg.nodes.FilterableStream


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


@dataclass(frozen=True)
class Segment:
    """Where one scene's picture sits on the film's clock, in frames.

    `frames` is the length of its own picture (including the cross-fade overlaps); `head` and
    `tail` are the frames it shares with the previous and the next scene.
    """

    frames: int
    head: int
    tail: int


def is_clip(visual: Path) -> bool:
    return Path(visual).suffix.lower() in CLIP_SUFFIXES


def video_encoder_options(video_bitrate: int) -> dict[str, Any]:
    """x264 settings: constant quality, with the bitrate capped by `video_bitrate` (VBV)."""
    return {
        "vcodec": "libx264",
        "preset": PRESET,
        "crf": CRF,
        "maxrate": video_bitrate,
        "bufsize": video_bitrate,
        "pix_fmt": "yuv420p",
    }


def video_bitrate_for(duration: float, size: tuple[int, int], max_bytes: int) -> int:
    """Video bits per second so audio + video fit in `max_bytes`, capped at a quality rate
    that follows the picture area (2.5 Mbit/s at 720x1280, 5.6 Mbit/s at 1080x1920)."""
    budget = max_bytes * 8 * CONTAINER_SAFETY / duration - AUDIO_BITRATE
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


def gap_seconds_for(durations: Sequence[float]) -> float:
    """Silence after each scene's voice: GAP_SECONDS, less for short clips so the video stays
    within a few percent of the voice time."""
    return min(GAP_SECONDS, MAX_GAP_SHARE * sum(durations) / len(durations))


def film_seconds(durations: Sequence[float]) -> float:
    """Length of the film and of its soundtrack: every voice followed by its gap."""
    return sum(durations) + gap_seconds_for(durations) * len(durations)


def _crossfade_seconds(durations: Sequence[float], gap: float) -> float:
    return min(CROSSFADE_SECONDS, 0.4 * (min(durations) + gap))


def _segments(durations: Sequence[float], fps: int) -> list[Segment]:
    """Each scene's frames, with cross-fades centred on the voice boundaries.

    Boundaries are rounded once on the film's clock (not per scene), so the frames add up to
    the soundtrack's length however many scenes there are.
    """
    gap = gap_seconds_for(durations)
    overlap = max(int(round(_crossfade_seconds(durations, gap) * fps)), 1)
    before, after = overlap // 2, overlap - overlap // 2
    total = int(round(film_seconds(durations) * fps))
    cuts = [int(round(start * fps)) for start in scene_starts(durations, gap)] + [total]
    last = len(durations) - 1
    segments = []
    for index in range(len(durations)):
        head = overlap if index > 0 else 0
        tail = overlap if index < last else 0
        first = cuts[index] - (before if index > 0 else 0)
        end = cuts[index + 1] + (after if index < last else 0)
        segments.append(Segment(frames=end - first, head=head, tail=tail))
    return segments


def _motion_canvas(size: tuple[int, int]) -> tuple[int, int]:
    """Size the still is scaled to before the pan: MOTION_SCALE larger, even dimensions."""
    return int(size[0] * MOTION_SCALE) // 2 * 2, int(size[1] * MOTION_SCALE) // 2 * 2


def _pan_window(index: int, size: tuple[int, int], frames: int) -> dict[str, str]:
    """crop= options sliding the window diagonally through the middle of the spare margin.

    Offsets stay on even pixels (crop's default for yuv420p): whole chroma samples move with
    the picture, which x264 encodes noticeably cheaper than odd offsets. The direction
    changes from scene to scene.
    """
    canvas = _motion_canvas(size)
    spare_x, spare_y = canvas[0] - size[0], canvas[1] - size[1]
    forwards = f"({PAN_START}+{PAN_END - PAN_START}*n/{max(frames - 1, 1)})"
    backwards = f"(1-{forwards})"
    x_expr = f"{spare_x}*{forwards if index % 2 == 0 else backwards}"
    y_expr = f"{spare_y}*{forwards if index % 4 < 2 else backwards}"
    return {"w": str(size[0]), "h": str(size[1]), "x": x_expr, "y": y_expr}


def _cover(stream: Stream, size: tuple[int, int], **scale_options: str) -> Stream:
    """Scaled so it covers `size`, centre-cropped to it, in yuv420p: one resample."""
    return (
        stream.filter(
            "scale", w=size[0], h=size[1], force_original_aspect_ratio="increase", **scale_options
        )
        .filter("crop", w=size[0], h=size[1])
        .filter("format", pix_fmts="yuv420p")
    )


def _decoded_stills(stills: Sequence[Path], size: tuple[int, int], fps: int) -> list[Stream]:
    """One stream per entry of `stills` holding the image cover-fitted to the motion canvas.

    Each distinct file is decoded and scaled once; a file used by several scenes is split.
    """
    uses: dict[str, int] = {}
    for still in stills:
        uses[str(still)] = uses.get(str(still), 0) + 1
    copies: dict[str, list[Stream]] = {}
    for path, count in uses.items():
        decoded = _cover(
            ffmpeg.input(path, framerate=fps).video, _motion_canvas(size), flags="lanczos"
        )
        if count == 1:
            copies[path] = [decoded]
        else:
            split = decoded.split()
            copies[path] = [split[i] for i in range(count)]
    return [copies[str(still)].pop() for still in stills]


def _still_scene(still: Stream, index: int, segment: Segment, size: tuple[int, int]) -> Stream:
    """The still repeated for the segment (frame references, no copies) with the pan applied."""
    return (
        still.filter("loop", loop=segment.frames - 1, size=1, start=0)
        .filter("setpts", "N/FRAME_RATE/TB")
        .filter("crop", **_pan_window(index, size, segment.frames))
        .filter("setsar", "1")
    )


def _clip_scene(clip: Path, segment: Segment, size: tuple[int, int], fps: int) -> Stream:
    """The clip at the film's frame rate and size, trimmed or held on its last frame to fill
    the segment exactly.

    Only as much of the file as the segment needs is read. The one scale runs after the
    frame-rate conversion when that drops frames and before it when it repeats them.
    """
    seconds = segment.frames / fps
    try:
        source = probe(clip)
    except ValueError as error:  # not a media file: rendering it again cannot help
        raise RenderRejected(str(error)) from None
    # Bilinear is enough to shrink a clip a little and costs a third less than bicubic.
    shrinks = (source.width or 0) >= size[0] and (source.height or 0) >= size[1]
    flags = "bilinear" if shrinks else "bicubic"
    stream = ffmpeg.input(str(clip), t=f"{seconds + 1 / fps:.4f}").video.filter(
        "setpts", "PTS-STARTPTS"
    )
    if source.fps is not None and source.fps < fps:
        stream = _cover(stream, size, flags=flags).filter("fps", fps)
    else:
        stream = _cover(stream.filter("fps", fps), size, flags=flags)
    return (
        stream.filter("setsar", "1")
        .filter("tpad", stop_mode="clone", stop_duration=f"{seconds:.4f}")
        .filter("trim", end_frame=segment.frames)
        .filter("setpts", "N/FRAME_RATE/TB")
    )


def _cut(stream: Stream, start: int, end: int) -> Stream:
    return stream.trim(start_frame=start, end_frame=end).setpts("PTS-STARTPTS")


def _video_with_crossfades(
    visuals: Sequence[Path], segments: Sequence[Segment], size: tuple[int, int], fps: int
) -> Stream:
    """Scenes joined by cross-fades: each scene is split into head, body and tail, the tail of
    one and the head of the next go through xfade, and everything is concatenated."""
    stills = iter(_decoded_stills([v for v in visuals if not is_clip(v)], size, fps))
    parts: list[Stream] = []
    previous_tail: Stream | None = None
    for index, (visual, segment) in enumerate(zip(visuals, segments)):
        scene = (
            _clip_scene(visual, segment, size, fps)
            if is_clip(visual)
            else _still_scene(next(stills), index, segment, size)
        )
        copies = scene.split()
        body_end = segment.frames - segment.tail
        if previous_tail is not None:
            parts.append(
                ffmpeg.filter(
                    [previous_tail, _cut(copies[2], 0, segment.head)],
                    "xfade",
                    transition="fade",
                    duration=f"{segment.head / fps:.4f}",
                    offset="0",
                )
            )
        parts.append(_cut(copies[0], segment.head, body_end))
        previous_tail = _cut(copies[1], body_end, segment.frames) if segment.tail else None
    video = ffmpeg.concat(*parts, v=1, a=0)
    # Each clip's scale keeps, until ffmpeg exits, as many output frames as were ever in
    # flight from it to the encoder. Copying them here into one shared pool bounds that to
    # the frames still inside the graph: ~100 MB less for a 12-clip 1080p film, for a memcpy
    # a frame that 720p films (~300 MB) do not need.
    larger_than_720p = size[0] * size[1] > 720 * 1280
    return video.filter("copy") if larger_than_720p and any(map(is_clip, visuals)) else video


def build_render_command(
    visuals: Sequence[Path],
    durations: Sequence[float],
    soundtrack: Path,
    captions: Path | None,
    out_path: Path,
    *,
    size: tuple[int, int],
    fps: int,
    video_bitrate: int,
) -> list[str]:
    """The full ffmpeg argument list (binary first) for one render pass: the scenes' visuals
    timed on the voice `durations`, the finished `soundtrack` WAV encoded to AAC as it is, and
    `captions` burned in (none when None)."""
    video = _video_with_crossfades(visuals, _segments(durations, fps), size, fps)
    if captions is not None:
        video = video.filter("ass", filename=str(captions), fontsdir=str(FONTS_DIR))
    output = ffmpeg.output(
        video,
        ffmpeg.input(str(soundtrack)).audio,
        str(out_path),
        r=fps,
        acodec="aac",
        aac_coder="fast",
        audio_bitrate=AUDIO_BITRATE,
        movflags="+faststart",
        **video_encoder_options(video_bitrate),
    )
    args = (
        output.global_args(
            "-hide_banner", "-nostdin", "-nostats", "-loglevel", "error", "-progress", "pipe:1"
        )
        .overwrite_output()
        .compile()
    )
    return [ffmpeg_exe(), *args[1:]]


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


def _estimated_words(
    plan: ScenePlan, audios: Sequence[Path], durations: Sequence[float]
) -> list[list[WordTiming]]:
    """Word timings shared evenly over each voice, for callers that have none stored."""
    return [
        word_timings(Speech(duration), scene.narration, audio, plan.language)
        for scene, audio, duration in zip(plan.scenes, audios, durations)
    ]


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
    """Render the plan's scene visuals (stills or clips, see CLIP_SUFFIXES) and voices into
    `out_path` (MP4) with the soundtrack of `mix_soundtrack` and captions in `caption_style`.

    `durations` are the real seconds of each voice file; `words` the timings of each scene's
    words relative to its voice (estimated from the durations when None). If the file still
    comes out larger than `max_bytes`, it is encoded once more at a proportionally lower
    bitrate. The thumbnail is written next to `out_path`; intermediate files go to `work_dir`.
    """
    _validate(plan, visuals, audios, durations, size, fps, words)
    out_path, work_dir = Path(out_path), Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    gap = gap_seconds_for(durations)
    total_seconds = film_seconds(durations)
    captions = write_captions(
        plan.scenes,
        words if words is not None else _estimated_words(plan, audios, durations),
        scene_starts(durations, gap),
        size,
        caption_style,
        work_dir / "captions.ass",
    )
    soundtrack = mix_soundtrack(
        audios, durations, gap, work_dir / "soundtrack.wav", music=music, work_dir=work_dir
    )
    clips = sum(1 for visual in visuals if is_clip(visual))

    def encode(video_bitrate: int, attempt: int) -> int:
        args = build_render_command(
            visuals,
            durations,
            soundtrack,
            captions,
            out_path,
            size=size,
            fps=fps,
            video_bitrate=video_bitrate,
        )
        logger.info(
            "render started attempt=%d scenes=%d clips=%d size=%dx%d seconds=%.2f "
            "captions=%s music=%s video_bitrate=%d",
            attempt,
            len(visuals),
            clips,
            size[0],
            size[1],
            total_seconds,
            caption_style,
            music.source if music is not None else "off",
            video_bitrate,
        )
        run_ffmpeg(args, total_seconds, work_dir / f"ffmpeg_{attempt}.log", progress)
        return out_path.stat().st_size

    bitrate = video_bitrate_for(total_seconds, size, max_bytes)
    size_bytes = encode(bitrate, attempt=1)
    if size_bytes > max_bytes:
        bitrate = int(bitrate * max_bytes / size_bytes * RETRY_SHRINK)
        logger.warning(
            "render too large size_bytes=%d max_bytes=%d retry_video_bitrate=%d",
            size_bytes,
            max_bytes,
            bitrate,
        )
        size_bytes = encode(bitrate, attempt=2)
        if size_bytes > max_bytes:
            raise RenderRejected(f"video is {size_bytes} bytes, over the {max_bytes} byte limit")
    if progress is not None:
        progress(1.0)
    info = probe(out_path)
    thumbnail = _make_thumbnail(
        out_path, durations[0] / 2, work_dir, out_path.with_name(f"{out_path.stem}_thumb.jpg")
    )
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
