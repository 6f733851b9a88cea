"""Stills + voice + captions -> one H.264/AAC MP4, in a single ffmpeg pass.

Cost model (measured on 2 cores, see bench/render.py): x264 dominates, so the filter graph
is kept close to free.
- Each still is decoded once and repeated by the `loop` filter (frame references, no copies).
- Ken Burns motion is a slow diagonal pan: a moving `crop` window over the still, scaled once
  to MOTION_SCALE times the frame. Crop is a pointer offset per frame, whereas zoompan or a
  per-frame scale resample every frame.
- xfade processes every frame passing through it, so only the short overlaps go through it
  and the rest of each scene is concatenated untouched.

Timeline: scene i's voice starts after the earlier voices, each followed by a short gap of
silence (`gap_seconds_for`); its picture is on screen from then on and cross-fades are
centred on those boundaries, so the video lasts exactly as long as the padded voice track.
"""

from __future__ import annotations

import logging
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
from shared.pipeline.subtitles import write_ass
from shared.plan import ScenePlan

logger = logging.getLogger(__name__)

GAP_SECONDS = 0.25
MAX_GAP_SHARE = 0.05  # all gaps together stay under this share of the voice time
CROSSFADE_SECONDS = 0.5
MOTION_SCALE = 1.12
PAN_START, PAN_END = 0.15, 0.85  # share of the spare margin the pan travels through
PRESET = "veryfast"
CRF = 23
AUDIO_BITRATE = 96_000
AUDIO_RATE = 44_100
QUALITY_BITRATE_720P = 2_500_000
MIN_VIDEO_BITRATE = 150_000
CONTAINER_SAFETY = 0.92  # share of max_bytes that audio + video may plan to use
RETRY_SHRINK = 0.8
THUMBNAIL_MAX_SIDE = 320
THUMBNAIL_MAX_BYTES = 200 * 1024
RENDER_TIMEOUT_S = 900
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
    that follows the picture area (2.5 Mbit/s at 720x1280)."""
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
    images: Sequence[Path],
    audios: Sequence[Path],
    durations: Sequence[float],
    size: tuple[int, int],
    fps: int,
) -> None:
    count = len(plan.scenes)
    if not len(images) == len(audios) == len(durations) == count:
        raise ValueError(
            f"need one image, audio and duration per scene: {count} scenes, {len(images)} "
            f"images, {len(audios)} audios, {len(durations)} durations"
        )
    if any(duration <= 0 for duration in durations):
        raise ValueError(f"voice durations must be positive, got {list(durations)}")
    missing = [str(p) for p in [*images, *audios] if not Path(p).is_file()]
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


def _crossfade_seconds(durations: Sequence[float], gap: float) -> float:
    return min(CROSSFADE_SECONDS, 0.4 * (min(durations) + gap))


def _segment_lengths(durations: Sequence[float], gap: float, crossfade: float) -> list[float]:
    """Seconds of picture per scene so that the cross-fades centre on the voice boundaries."""
    last = len(durations) - 1
    return [
        duration
        + gap
        + (crossfade / 2 if index > 0 else 0.0)
        + (crossfade / 2 if index < last else 0.0)
        for index, duration in enumerate(durations)
    ]


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


def _decoded_stills(images: Sequence[Path], size: tuple[int, int], fps: int) -> list[Stream]:
    """One stream per scene holding its image cover-fitted to the motion canvas, in yuv420p.

    Each distinct file is decoded and scaled once; a file used by several scenes is split.
    """
    canvas_width, canvas_height = _motion_canvas(size)
    uses: dict[str, int] = {}
    for image in images:
        uses[str(image)] = uses.get(str(image), 0) + 1
    copies: dict[str, list[Stream]] = {}
    for path, count in uses.items():
        still = (
            ffmpeg.input(path, framerate=fps)
            .video.filter(
                "scale",
                w=canvas_width,
                h=canvas_height,
                force_original_aspect_ratio="increase",
                flags="lanczos",
            )
            .filter("crop", w=canvas_width, h=canvas_height)
            .filter("format", pix_fmts="yuv420p")
        )
        if count == 1:
            copies[path] = [still]
        else:
            split = still.split()
            copies[path] = [split[i] for i in range(count)]
    return [copies[str(image)].pop() for image in images]


def _scene_video(
    still: Stream, index: int, seconds: float, size: tuple[int, int], fps: int
) -> Stream:
    """The still repeated for `seconds` (frame references, no copies) with the pan applied."""
    frames = max(int(round(seconds * fps)), 1)
    return (
        still.filter("loop", loop=frames - 1, size=1, start=0)
        .filter("setpts", "N/FRAME_RATE/TB")
        .filter("crop", **_pan_window(index, size, frames))
        .filter("setsar", "1")
    )


def _cut(stream: Stream, start: float, end: float) -> Stream:
    return stream.trim(start=f"{start:.4f}", end=f"{end:.4f}").setpts("PTS-STARTPTS")


def _video_with_crossfades(
    images: Sequence[Path],
    lengths: Sequence[float],
    crossfade: float,
    size: tuple[int, int],
    fps: int,
) -> Stream:
    """Scenes joined by cross-fades: each scene is split into head, body and tail, the tail of
    one and the head of the next go through xfade, and everything is concatenated."""
    last = len(images) - 1
    parts: list[Stream] = []
    previous_tail: Stream | None = None
    stills = _decoded_stills(images, size, fps)
    for index, (still, length) in enumerate(zip(stills, lengths)):
        copies = _scene_video(still, index, length, size, fps).split()
        body_start = crossfade if index > 0 else 0.0
        body_end = length - crossfade if index < last else length
        if previous_tail is not None:
            head = _cut(copies[2], 0.0, crossfade)
            parts.append(
                ffmpeg.filter(
                    [previous_tail, head],
                    "xfade",
                    transition="fade",
                    duration=f"{crossfade:.4f}",
                    offset="0",
                )
            )
        parts.append(_cut(copies[0], body_start, body_end))
        previous_tail = _cut(copies[1], body_end, length) if index < last else None
    return ffmpeg.concat(*parts, v=1, a=0)


def _scene_audio(audio: Path, seconds: float) -> Stream:
    """The voice resampled, padded with silence and cut to exactly `seconds`."""
    return (
        ffmpeg.input(str(audio))
        .audio.filter("aresample", AUDIO_RATE)
        .filter("aformat", sample_fmts="fltp", channel_layouts="mono")
        .filter("apad", whole_dur=f"{seconds:.4f}")
        .filter("atrim", end=f"{seconds:.4f}")
        .filter("asetpts", "N/SR/TB")
    )


def build_render_command(
    images: Sequence[Path],
    audios: Sequence[Path],
    durations: Sequence[float],
    subtitles: Path,
    out_path: Path,
    *,
    size: tuple[int, int],
    fps: int,
    video_bitrate: int,
) -> list[str]:
    """The full ffmpeg argument list (binary first) for one render pass."""
    gap = gap_seconds_for(durations)
    crossfade = _crossfade_seconds(durations, gap)
    lengths = _segment_lengths(durations, gap, crossfade)
    video = _video_with_crossfades(images, lengths, crossfade, size, fps)
    video = video.filter("ass", filename=str(subtitles), fontsdir=str(FONTS_DIR))
    audio = ffmpeg.concat(
        *(_scene_audio(path, d + gap) for path, d in zip(audios, durations)),
        v=0,
        a=1,
    )
    output = ffmpeg.output(
        video,
        audio,
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
            args, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, text=True
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


def render_video(
    plan: ScenePlan,
    images: list[Path],
    audios: list[Path],
    durations: list[float],
    out_path: Path,
    *,
    size: tuple[int, int] = (720, 1280),
    fps: int = 30,
    work_dir: Path,
    progress: ProgressCallback | None = None,
    max_bytes: int = 50 * 1024 * 1024,
) -> RenderResult:
    """Render the plan's stills and voices into `out_path` (MP4) with burned-in captions.

    `durations` are the real seconds of each voice file. If the file still comes out larger
    than `max_bytes`, it is encoded once more at a proportionally lower bitrate. The
    thumbnail is written next to `out_path`; intermediate files go to `work_dir`.
    """
    _validate(plan, images, audios, durations, size, fps)
    out_path, work_dir = Path(out_path), Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    subtitles = write_ass(
        plan.scenes,
        durations,
        size,
        work_dir / "captions.ass",
        gap_seconds=gap_seconds_for(durations),
    )
    total_seconds = sum(durations) + gap_seconds_for(durations) * len(durations)

    def encode(video_bitrate: int, attempt: int) -> int:
        args = build_render_command(
            images,
            audios,
            durations,
            subtitles,
            out_path,
            size=size,
            fps=fps,
            video_bitrate=video_bitrate,
        )
        logger.info(
            "render started attempt=%d scenes=%d seconds=%.2f video_bitrate=%d",
            attempt,
            len(images),
            total_seconds,
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
