"""The film's picture, scene by scene: one short ffmpeg process per scene makes that scene's
frames (raw yuv420p), the one after the other, for the encoder's pipe.

A scene's process decodes only its own visual, so memory does not grow with the number of
scenes (every decoder and scaler in one graph kept ~40 MB each until the end of a 1080p
render). It writes, in order: the cross-fade from the previous scene's tail into its own
head, its body, and its own tail. The caller sends all but the tail to the encoder and the
tail to a file (`tail_file`), which the next scene's process fades from.

Cost model (measured on 2 cores, see bench/render.py): x264 dominates, so the scene graphs
are kept close to free.
- A still is decoded once and repeated by the `loop` filter (frame references, no copies).
- Ken Burns motion is a slow diagonal pan: a moving `crop` window over the still, scaled once
  to MOTION_SCALE times the frame. Crop is a pointer offset per frame, whereas zoompan or a
  per-frame scale resample every frame.
- A clip is read only as far as its scene needs (`-t`); its frames are scaled once, on
  whichever side of the frame-rate conversion has fewer of them, and its held tail is
  `tpad` clones (frame references).
- Only the head's frames go through the cross-fade; the body passes untouched.
- One decoder thread and one filter thread: x264 has the other core's worth of threads.

Timeline: scene i's voice starts after the earlier voices, each followed by a short gap of
silence (`gap_seconds_for`); its picture is on screen from then on and cross-fades are
centred on those boundaries. Cuts are placed on whole frames of the film's clock, so the
video lasts as long as the soundtrack to within half a frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import ffmpeg

from shared.media import ffmpeg_exe, probe
from shared.pipeline.subtitles import scene_starts

CLIP_SUFFIXES = (".mp4", ".mov", ".webm", ".mkv")  # any other visual is taken to be a still
GAP_SECONDS = 0.25
MAX_GAP_SHARE = 0.05  # all gaps together stay under this share of the voice time
CROSSFADE_SECONDS = 0.5
MOTION_SCALE = 1.12
PAN_START, PAN_END = 0.15, 0.85  # share of the spare margin the pan travels through
# A clip's decoder threads: each holds pictures; one keeps a 720p clip ahead of x264.
DECODER_THREADS = 1

Stream = ffmpeg.nodes.FilterableStream


@dataclass(frozen=True)
class Segment:
    """Where one scene's picture sits on the film's clock, in frames.

    `frames` is the length of its own picture (including the cross-fade overlaps); `head` and
    `tail` are the frames it shares with the previous and the next scene.
    """

    frames: int
    head: int
    tail: int

    @property
    def written(self) -> int:
        """Frames the scene's process writes to the film: all but its tail, which the next
        scene's process cross-fades into its own head."""
        return self.frames - self.tail


def is_clip(visual: Path) -> bool:
    return Path(visual).suffix.lower() in CLIP_SUFFIXES


def gap_seconds_for(durations: Sequence[float]) -> float:
    """Silence after each scene's voice: GAP_SECONDS, less for short clips so the video stays
    within a few percent of the voice time."""
    return min(GAP_SECONDS, MAX_GAP_SHARE * sum(durations) / len(durations))


def film_seconds(durations: Sequence[float]) -> float:
    """Length of the film and of its soundtrack: every voice followed by its gap."""
    return sum(durations) + gap_seconds_for(durations) * len(durations)


def _crossfade_seconds(durations: Sequence[float], gap: float) -> float:
    return min(CROSSFADE_SECONDS, 0.4 * (min(durations) + gap))


def segments_for(durations: Sequence[float], fps: int) -> list[Segment]:
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


def _still_scene(still: Path, index: int, frames: int, size: tuple[int, int], fps: int) -> Stream:
    """The still, decoded and scaled once, repeated for `frames` (frame references, no
    copies) with the pan applied."""
    decoded = _cover(
        ffmpeg.input(str(still), framerate=fps).video, _motion_canvas(size), flags="lanczos"
    )
    return (
        decoded.filter("loop", loop=frames - 1, size=1, start=0)
        .filter("setpts", "N/FRAME_RATE/TB")
        .filter("crop", **_pan_window(index, size, frames))
        .filter("setsar", "1")
    )


def _clip_scene(clip: Path, frames: int, size: tuple[int, int], fps: int) -> Stream:
    """`frames` of the clip at the film's frame rate and size, held on its last frame when
    it is shorter.

    Only as much of the file as needed is read. The one scale runs after the frame-rate
    conversion when that drops frames and before it when it repeats them.
    """
    seconds = frames / fps
    source = probe(clip)  # ValueError when it is not a media file
    # Bilinear is enough to shrink a clip a little and costs a third less than bicubic.
    shrinks = (source.width or 0) >= size[0] and (source.height or 0) >= size[1]
    flags = "bilinear" if shrinks else "bicubic"
    stream = ffmpeg.input(
        str(clip), t=f"{seconds + 1 / fps:.4f}", threads=DECODER_THREADS
    ).video.filter("setpts", "PTS-STARTPTS")
    if source.fps is not None and source.fps < fps:
        stream = _cover(stream, size, flags=flags).filter("fps", fps)
    else:
        stream = _cover(stream.filter("fps", fps), size, flags=flags)
    return (
        stream.filter("setsar", "1")
        .filter("tpad", stop_mode="clone", stop_duration=f"{seconds:.4f}")
        .filter("trim", end_frame=frames)
        .filter("setpts", "N/FRAME_RATE/TB")
    )


def _scene(visual: Path, index: int, segment: Segment, size: tuple[int, int], fps: int) -> Stream:
    if is_clip(visual):
        return _clip_scene(visual, segment.frames, size, fps)
    return _still_scene(visual, index, segment.frames, size, fps)


@dataclass(frozen=True)
class SceneRun:
    """One scene's ffmpeg process: its command, and where its output (raw frames) goes."""

    command: list[str]
    film_bytes: int  # the first bytes of its output: frames of the film, for the encoder
    tail: Path | None  # the rest: its tail, which the next scene's process fades from
    tail_bytes: int


def _cut(stream: Stream, start: int, end: int) -> Stream:
    return stream.trim(start_frame=start, end_frame=end).setpts("PTS-STARTPTS")


def tail_file(work_dir: Path, index: int) -> Path:
    """Where scene `index`'s tail (raw frames) waits for the next scene's cross-fade; two
    files take turns, so the disk holds at most two tails."""
    return work_dir / f"tail_{index % 2}.yuv"


def frame_bytes(size: tuple[int, int]) -> int:
    """Bytes of one raw yuv420p frame."""
    return size[0] * size[1] * 3 // 2


def scene_run(
    visuals: Sequence[Path],
    segments: Sequence[Segment],
    index: int,
    work_dir: Path,
    size: tuple[int, int],
    fps: int,
) -> SceneRun:
    """Scene `index`'s process. It writes all its frames, raw yuv420p at `size`: first the
    cross-fade from the previous scene's tail (read from that scene's tail file) into this
    scene's head, then the body, which go to the film, then its own tail, which goes to its
    tail file. One output and no frames held back: ffmpeg writes them as it makes them."""
    segment = segments[index]
    video = _scene(visuals[index], index, segment, size, fps)
    if segment.head:
        previous = ffmpeg.input(
            str(tail_file(work_dir, index - 1)),
            format="rawvideo",
            pix_fmt="yuv420p",
            s=f"{size[0]}x{size[1]}",
            framerate=fps,
        ).video
        # The head fades in over the previous tail: alpha blending in 4:2:0 (xfade would
        # convert both to 4:4:4 and back, ~60 MB more at 1080p); only the head goes through it.
        copies = video.split()
        fading_in = (
            _cut(copies[0], 0, segment.head)
            .filter("format", pix_fmts="yuva420p")
            .filter("fade", type="in", start_frame=0, nb_frames=segment.head, alpha=1)
        )
        fade = ffmpeg.overlay(previous, fading_in, format="yuv420", eof_action="endall")
        video = ffmpeg.concat(fade, _cut(copies[1], segment.head, segment.frames), v=1, a=0)
    output = ffmpeg.output(
        video.setpts("N/FRAME_RATE/TB"),
        "pipe:1",
        format="rawvideo",
        pix_fmt="yuv420p",
        fps_mode="passthrough",
        frames=segment.frames,
    )
    args = output.global_args(
        "-hide_banner", "-nostdin", "-nostats", "-loglevel", "error", "-filter_threads", "1"
    )
    return SceneRun(
        command=[ffmpeg_exe(), *args.compile()[1:]],
        film_bytes=segment.written * frame_bytes(size),
        tail=tail_file(work_dir, index) if segment.tail else None,
        tail_bytes=segment.tail * frame_bytes(size),
    )
