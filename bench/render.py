"""Render benchmark: 6-scene, ~30 s films from stills and from animated clips, 720p and 1080p,
and a 12-scene, 60 s one at 1080p.

For each film it prints the render's wall time and the peak RSS of its ffmpeg processes
against the encode floor: x264 alone encoding the film's own frames (decoded beforehand to
raw YUV) at the same size, fps and settings, so render / floor is the cost of everything
around the encoder. The peak RSS is that of all the render's processes together: their
resident sets summed every SAMPLE_S (and never less than the largest single one, which the
kernel keeps exactly). The films:
- `stills`, `stills_1080`: the local providers' stills with the pan, karaoke captions, no
  music;
- `clips_720`, `clips_1080`: six 5 s H.264 clips made here with ffmpeg (test patterns, a
  fractal zoom, slow moves over the stills) at 720x1280 and 24 fps, as Runway's gen4_turbo
  delivers them for 9:16, so each is converted to 30 fps (and scaled at 1080p); no captions,
  no music;
- `styled_720`, `styled_1080`: the same clips with karaoke captions and the generated music
  bed (the soundtrack mix runs inside the measured render);
- `long_1080`: 12 scenes, 60 s, from the clips (each twice) at 1080p with karaoke captions,
  for its size against the 50 MB limit and its memory against the 6-scene films' (once).
It also times x264 on one still frame looped (`still_floor_s`), the cheapest content there
is, and, through the real worker (claim, clips, render, upload) against PostgreSQL and the
local Telegram Bot API server with every gate on: `e2e_s`, from the approval of the stills
(`images` gate) to the film's arrival (the operator approves the clips' preview at the
`videos` gate as soon as it is sent), and `e2e_render_s`, from that approval to the film.
Each render runs in a forked process, so its peak RSS is its own. The last line printed is
one JSON object.

Run from the repository root: python -m bench.render [--keep DIR] [--repeats N] [--no-e2e]
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import resource
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, TypeVar

from functions.worker.main import run_tick, start
from localapi.telegram_server import RecordedCall, TelegramServer
from shared import queue
from shared.config import load_settings
from shared.db import database_url
from shared.media import ffmpeg_exe
from shared.operator import ops
from shared.pipeline.audio import MusicChoice
from shared.pipeline.render import (
    RenderResult,
    film_seconds,
    render_video,
    video_bitrate_for,
    video_encoder_options,
)
from shared.plan import ScenePlan, plan_from_text
from shared.providers.local_visuals import LocalVisuals
from shared.providers.local_voice import LocalVoice

T = TypeVar("T")

SIZE_720 = (720, 1280)
SIZE_1080 = (1080, 1920)
FPS = 30
SECONDS = 30
MAX_BYTES = 50 * 1024 * 1024
REPEATS = 3
SAMPLE_S = 0.01
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
CLIP_SIZE = (720, 1280)  # what Runway's gen4_turbo hands back for 9:16 (ratio 720:1280)
CLIP_FPS = 24
CLIP_SECONDS = 5
CLIP_PAN_SCALE = 1.25  # the slow move over a still crops a window out of it this much larger
BENCH_TEXT = (
    "Байкал — самое глубокое озеро на планете, его возраст около двадцати пяти миллионов лет. "
    "Зимой лёд на озере становится таким прозрачным, что сквозь него видно камни на дне. "
    "В холодной воде живёт нерпа, единственный пресноводный тюлень в России. "
    "Вокруг озера растёт тайга, а в горах прячутся тихие бухты и горячие источники. "
    "Летом сюда приезжают путешественники, чтобы пройти по Большой Байкальской тропе. "
    "Берегите Байкал: это чистейший запас пресной воды для всей планеты."
)


@dataclass(frozen=True)
class Inputs:
    plan: ScenePlan
    stills: list[Path]
    clips: list[Path]
    audios: list[Path]
    durations: list[float]


@dataclass(frozen=True)
class Film:
    """One benchmarked render: which visuals, at what size, with which captions and music."""

    name: str
    visuals: list[Path]
    size: tuple[int, int]
    caption_style: str
    music: MusicChoice | None


@dataclass(frozen=True)
class Timing:
    wall_s: float
    cpu_s: float  # user + system time of the child processes (ffmpeg) started meanwhile


def _ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


def _clip_sources(stills: list[Path]) -> list[tuple[list[str], str]]:
    """(input arguments, filter) of the six clips: test patterns, a fractal and slow diagonal
    moves over three of the stills."""
    width, height = CLIP_SIZE
    rate = f"rate={CLIP_FPS}"
    pattern = ["-f", "lavfi", "-i"]
    pan_width, pan_height = int(width * CLIP_PAN_SCALE), int(height * CLIP_PAN_SCALE) // 2 * 2
    pan = (
        f"scale={pan_width}:{pan_height}:force_original_aspect_ratio=increase,"
        f"crop={width}:{height}:x='(iw-ow)*t/{CLIP_SECONDS}':y='(ih-oh)*t/{CLIP_SECONDS}'"
    )
    still_args = ["-loop", "1", "-framerate", str(CLIP_FPS), "-i"]
    return [
        ([*pattern, f"testsrc2=size={width}x{height}:{rate}"], "null"),
        ([*still_args, str(stills[1])], pan),
        (
            [*pattern, f"mandelbrot=size={width // 2}x{height // 2}:{rate}"],
            f"scale={width}:{height}",
        ),
        ([*still_args, str(stills[3])], pan),
        ([*pattern, f"gradients=size={width}x{height}:{rate}:speed=0.02"], "null"),
        ([*still_args, str(stills[5])], pan),
    ]


def make_clips(stills: list[Path], work_dir: Path) -> list[Path]:
    """Six CLIP_SECONDS H.264 clips at CLIP_SIZE and CLIP_FPS, one per scene."""
    clips = []
    for index, (source, video_filter) in enumerate(_clip_sources(stills)):
        clip = work_dir / f"clip_{index}.mp4"
        _ffmpeg(
            *source,
            "-t",
            str(CLIP_SECONDS),
            "-vf",
            f"{video_filter},format=yuv420p",
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-crf",
            "20",
            str(clip),
        )
        clips.append(clip)
    return clips


def prepare_inputs(work_dir: Path) -> Inputs:
    """Plan, stills and voices made with the local providers, and clips made with ffmpeg."""
    plan = plan_from_text(BENCH_TEXT, "ru", SECONDS)
    visuals, voice = LocalVisuals(), LocalVoice()
    stills, audios, durations = [], [], []
    for index, scene in enumerate(plan.scenes):
        still, audio = work_dir / f"scene_{index}.png", work_dir / f"scene_{index}.wav"
        visuals.draw(plan, index, SIZE_720, still)
        durations.append(voice.speak(scene.narration, plan.language, audio).seconds)
        stills.append(still)
        audios.append(audio)
    return Inputs(plan, stills, make_clips(stills, work_dir), audios, durations)


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(action: Callable[[], T]) -> tuple[Timing, T]:
    cpu_before, started = _children_cpu_s(), time.perf_counter()
    value = action()
    return Timing(time.perf_counter() - started, _children_cpu_s() - cpu_before), value


def best(timings: list[Timing]) -> Timing:
    """Fastest wall time and least CPU time of several runs: the machine is shared."""
    return Timing(min(t.wall_s for t in timings), min(t.cpu_s for t in timings))


def peak_child_rss_mb() -> float:
    """Largest resident set of any finished child process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def _children_rss_bytes() -> int:
    """Resident bytes of this process's children (the render's ffmpeg processes) now."""
    total = 0
    for task in Path("/proc/self/task").iterdir():
        try:
            children = (task / "children").read_text().split()
        except OSError:  # the thread ended meanwhile
            continue
        for pid in children:
            try:
                total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_BYTES
            except (OSError, IndexError, ValueError):  # the process ended meanwhile
                continue
    return total


class ChildrenRss(threading.Thread):
    """Samples the summed resident set of this process's children every SAMPLE_S; `peak_mb`
    is the largest sum seen."""

    def __init__(self) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self._done = threading.Event()
        self.peak_mb = 0.0

    def run(self) -> None:
        while not self._done.wait(SAMPLE_S):
            self.peak_mb = max(self.peak_mb, _children_rss_bytes() / 2**20)

    def __enter__(self) -> ChildrenRss:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._done.set()
        self.join()


def _render(inputs: Inputs, film: Film, work_dir: Path) -> tuple[Timing, float, RenderResult]:
    """Runs in a fresh forked process, whose children's peak RSS starts from zero."""
    with ChildrenRss() as sampled:
        timing, result = timed(
            lambda: render_video(
                inputs.plan,
                film.visuals,
                inputs.audios,
                inputs.durations,
                work_dir / f"{film.name}.mp4",
                size=film.size,
                fps=FPS,
                work_dir=work_dir / f"render_{film.name}",
                caption_style=film.caption_style,
                music=film.music,
            )
        )
    return timing, max(sampled.peak_mb, peak_child_rss_mb()), result


def render_in_child(
    inputs: Inputs, film: Film, work_dir: Path
) -> tuple[Timing, float, RenderResult]:
    """Render timing, peak RSS in MB of the render's ffmpeg processes, and the result."""
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(_render, inputs, film, work_dir).result()


def _encoder_args(video_bitrate: int) -> list[str]:
    args: list[str] = []
    for option, value in video_encoder_options(video_bitrate).items():
        args += [f"-{option}", str(value)]
    return args


def _time_raw_encode(
    raw_path: Path, size: tuple[int, int], frames: int, video_bitrate: int, out_path: Path
) -> Timing:
    """Seconds for x264 alone to encode `frames` raw yuv420p frames read from `raw_path`
    (looped when it holds fewer): no filters, no decoding."""
    command = [
        ffmpeg_exe(),
        "-hide_banner",
        "-loglevel",
        "error",
        "-y",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "yuv420p",
        "-s",
        f"{size[0]}x{size[1]}",
        "-framerate",
        str(FPS),
        "-stream_loop",
        "-1",
        "-i",
        str(raw_path),
        "-frames:v",
        str(frames),
        *_encoder_args(video_bitrate),
        "-an",
        str(out_path),
    ]
    timing, _ = timed(lambda: subprocess.run(command, check=True))
    return timing


def _to_raw(source: Path, size: tuple[int, int], raw_path: Path) -> Path:
    _ffmpeg(
        "-i",
        str(source),
        "-vf",
        f"scale={size[0]}:{size[1]}",
        "-pix_fmt",
        "yuv420p",
        "-f",
        "rawvideo",
        str(raw_path),
    )
    return raw_path


def time_encode_floor(
    still: Path, size: tuple[int, int], frames: int, video_bitrate: int, work_dir: Path
) -> Timing:
    """The cheapest content: one still frame looped, encoded with the render's x264 settings."""
    raw_frame = _to_raw(still, size, work_dir / "floor_frame.yuv")
    return _time_raw_encode(raw_frame, size, frames, video_bitrate, work_dir / "floor.mp4")


def time_encode_same_frames(
    video: Path, size: tuple[int, int], frames: int, video_bitrate: int, work_dir: Path
) -> Timing:
    """x264 alone re-encoding the rendered frames themselves (decoded beforehand): the cost
    of encoding this moving content, without the render's decoding and filtering."""
    raw_frames = _to_raw(video, size, work_dir / "rendered_frames.yuv")
    try:
        return _time_raw_encode(
            raw_frames, size, frames, video_bitrate, work_dir / "same_frames.mp4"
        )
    finally:
        raw_frames.unlink()


def bench_film(inputs: Inputs, film: Film, work_dir: Path, repeats: int) -> dict[str, Any]:
    """Best-of-`repeats` render against the best-of-`repeats` encode of its own frames."""
    runs = [render_in_child(inputs, film, work_dir) for _ in range(repeats)]
    render = best([timing for timing, _, _ in runs])
    peak_rss_mb = max(rss for _, rss, _ in runs)
    result = runs[-1][2]
    frames = round(result.duration * FPS)
    bitrate = video_bitrate_for(film_seconds(inputs.durations), film.size, MAX_BYTES)
    floor = best(
        [
            time_encode_same_frames(result.path, film.size, frames, bitrate, work_dir)
            for _ in range(repeats)
        ]
    )
    print(
        f"{film.name}: {film.size[0]}x{film.size[1]} video_s={result.duration:.2f} "
        f"scenes={len(film.visuals)} frames={frames} size_mb={result.size_bytes / 1e6:.2f} "
        f"(limit {MAX_BYTES / 1e6:.2f}) peak_rss_mb={peak_rss_mb:.0f} "
        f"render wall_s={render.wall_s:.2f} cpu_s={render.cpu_s:.2f} | "
        f"encode floor (own frames) wall_s={floor.wall_s:.2f} cpu_s={floor.cpu_s:.2f} | "
        f"ratio={render.wall_s / floor.wall_s:.2f}"
    )
    return {
        "render_s": round(render.wall_s, 3),
        "encode_floor_s": round(floor.wall_s, 3),
        "ratio": round(render.wall_s / floor.wall_s, 3),
        "ratio_cpu": round(render.cpu_s / floor.cpu_s, 3),
        "peak_rss_mb": round(peak_rss_mb, 1),
        "size_mb": round(result.size_bytes / 1e6, 2),
        "video_s": round(result.duration, 2),
    }


def doubled(inputs: Inputs) -> Inputs:
    """The scenes twice over (12 scenes, ~60 s), each clip copied for its second scene."""
    copies = []
    for clip in inputs.clips:
        copies.append(clip.with_name(f"{clip.stem}_again.mp4"))
        shutil.copyfile(clip, copies[-1])
    return replace(
        inputs,
        plan=replace(inputs.plan, scenes=inputs.plan.scenes * 2),
        stills=inputs.stills * 2,
        clips=inputs.clips + copies,
        audios=inputs.audios * 2,
        durations=inputs.durations * 2,
    )


def run_render_bench(work_dir: Path, repeats: int = REPEATS) -> dict[str, Any]:
    """Figures of every film, flat: today's stills figures unprefixed, the others prefixed."""
    inputs = prepare_inputs(work_dir)
    music = MusicChoice(source="generated", seed="bench")
    films = [
        Film("clips_720", inputs.clips, SIZE_720, "off", None),
        Film("clips_1080", inputs.clips, SIZE_1080, "off", None),
        Film("styled_720", inputs.clips, SIZE_720, "karaoke", music),
        Film("styled_1080", inputs.clips, SIZE_1080, "karaoke", music),
        Film("stills_1080", inputs.stills, SIZE_1080, "karaoke", None),
    ]
    print(f"scenes={len(inputs.plan.scenes)} voice_s={sum(inputs.durations):.2f}")
    stills = bench_film(
        inputs, Film("stills", inputs.stills, SIZE_720, "karaoke", None), work_dir, repeats
    )
    frames = round(film_seconds(inputs.durations) * FPS)
    bitrate = video_bitrate_for(film_seconds(inputs.durations), SIZE_720, MAX_BYTES)
    still_floor = best(
        [
            time_encode_floor(inputs.stills[0], SIZE_720, frames, bitrate, work_dir)
            for _ in range(repeats)
        ]
    )
    print(f"still floor: wall_s={still_floor.wall_s:.2f} cpu_s={still_floor.cpu_s:.2f}")
    figures: dict[str, Any] = {
        "bench": "render",
        **stills,
        "still_floor_s": round(still_floor.wall_s, 3),
        "ratio_still": round(stills["render_s"] / still_floor.wall_s, 3),
    }
    for film in films:
        for key, value in bench_film(inputs, film, work_dir, repeats).items():
            figures[f"{film.name}_{key}"] = value
    long_inputs = doubled(inputs)
    long_film = Film("long_1080", long_inputs.clips, SIZE_1080, "karaoke", None)
    for key, value in bench_film(long_inputs, long_film, work_dir, 1).items():
        figures[f"long_1080_{key}"] = value
    return figures


def _is_film(call: RecordedCall) -> bool:
    """The delivered film comes with its thumbnail; the clips' preview has none."""
    return "thumbnail" in call.files


def time_e2e() -> tuple[float, float]:
    """Seconds from the stills' approval to the film arriving at the local Bot API server, and
    from the clips' approval to it, through the real worker (local clips, every gate on) on
    embedded PostgreSQL (or DATABASE_URL) in a throw-away schema."""
    base = load_settings()
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    with TelegramServer() as telegram:
        settings = load_settings(
            dict(
                os.environ,
                DATABASE_URL=database_url(base),
                DATABASE_SCHEMA=schema,
                TELEGRAM_BOT_TOKEN=telegram.token,
                TELEGRAM_API_BASE=telegram.base_url,
                VIDEO_SECONDS=str(SECONDS),
                VIDEO_FORMAT="9:16",
                APPROVAL_GATES="script,images,videos",
            )
        )
        database, client, providers = start(settings)
        try:
            job_id, _ = queue.enqueue(
                database, chat_id=1, user_id=1, description=BENCH_TEXT, language="ru"
            )
            for gate in ("script", "images"):
                run_tick(settings, database, client, providers)
                ops.approve(database, job_id, gate)
            started = time.perf_counter()
            run_tick(settings, database, client, providers)  # the clips and their preview
            ops.approve(database, job_id, "videos")
            clips_approved = time.perf_counter()
            run_tick(settings, database, client, providers)
            telegram.wait_for("sendVideo", _is_film, timeout=120)
            arrived = time.perf_counter()
            return arrived - started, arrived - clips_approved
        finally:
            database.execute(f"DROP SCHEMA {schema} CASCADE")
            database.close()


def main(keep_dir: Path | None = None, repeats: int = REPEATS, e2e: bool = True) -> dict[str, Any]:
    """Run the benchmark, print its figures and, last, one JSON line; return that dict."""
    with tempfile.TemporaryDirectory(prefix="bench_render_") as temp:
        work_dir = keep_dir or Path(temp)
        work_dir.mkdir(parents=True, exist_ok=True)
        figures = run_render_bench(work_dir, repeats)
    if e2e:
        from_stills, from_clips = time_e2e()
        figures["e2e_s"], figures["e2e_render_s"] = round(from_stills, 2), round(from_clips, 2)
        print(
            f"e2e: {from_stills:.2f} s from the stills' approval to the delivered film, "
            f"{from_clips:.2f} s of them from the clips' approval"
        )
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="keep the films and inputs in this directory")
    parser.add_argument("--repeats", type=int, default=REPEATS, help="runs per figure (best)")
    parser.add_argument(
        "--no-e2e", dest="e2e", action="store_false", help="skip the end-to-end worker timing"
    )
    arguments = parser.parse_args()
    main(arguments.keep, arguments.repeats, arguments.e2e)
