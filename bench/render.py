"""Render benchmark: a 6-scene, ~30 s clip at 720x1280 with the local providers.

Prints the render's wall time and the peak RSS of the ffmpeg child against the encode floor:
x264 alone encoding the clip's own frames (decoded beforehand to raw YUV) at the same size,
fps and settings, so render / floor is the cost of everything around the encoder. It also
times x264 on one still frame looped (`still_floor_s`), the cheapest content there is, and
`e2e_s`: the time from the last approval to the delivered video through the real worker
(claim, render, upload) against PostgreSQL and the local Telegram Bot API server. The last
line printed is one JSON object.

Run from the repository root: python -m bench.render [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

from functions.worker.main import run_tick, start
from localapi.telegram_server import TelegramServer
from shared import queue
from shared.config import load_settings
from shared.db import database_url
from shared.media import ffmpeg_exe
from shared.operator import ops
from shared.pipeline.render import (
    RenderResult,
    gap_seconds_for,
    render_video,
    video_bitrate_for,
    video_encoder_options,
)
from shared.plan import ScenePlan, plan_from_text
from shared.providers.local_visuals import LocalVisuals
from shared.providers.local_voice import LocalVoice

T = TypeVar("T")

SIZE = (720, 1280)
FPS = 30
SECONDS = 30
MAX_BYTES = 50 * 1024 * 1024
REPEATS = 3
BENCH_TEXT = (
    "Байкал — самое глубокое озеро на планете, его возраст около двадцати пяти миллионов лет. "
    "Зимой лёд на озере становится таким прозрачным, что сквозь него видно камни на дне. "
    "В холодной воде живёт нерпа, единственный пресноводный тюлень в России. "
    "Вокруг озера растёт тайга, а в горах прячутся тихие бухты и горячие источники. "
    "Летом сюда приезжают путешественники, чтобы пройти по Большой Байкальской тропе. "
    "Берегите Байкал: это чистейший запас пресной воды для всей планеты."
)


def prepare_inputs(work_dir: Path) -> tuple[ScenePlan, list[Path], list[Path], list[float]]:
    """Plan, stills and voices for the benchmark clip, made with the local providers."""
    plan = plan_from_text(BENCH_TEXT, "ru", SECONDS)
    visuals, voice = LocalVisuals(), LocalVoice()
    images, audios, durations = [], [], []
    for index, scene in enumerate(plan.scenes):
        image, audio = work_dir / f"scene_{index}.png", work_dir / f"scene_{index}.wav"
        visuals.draw(plan, index, SIZE, image)
        durations.append(voice.speak(scene.narration, plan.language, audio).seconds)
        images.append(image)
        audios.append(audio)
    return plan, images, audios, durations


@dataclass(frozen=True)
class Timing:
    wall_s: float
    cpu_s: float  # user + system time of the child processes (ffmpeg) started meanwhile


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


def render_once(
    plan: ScenePlan, images: list[Path], audios: list[Path], durations: list[float], work_dir: Path
) -> RenderResult:
    return render_video(
        plan,
        images,
        audios,
        durations,
        work_dir / "bench.mp4",
        size=SIZE,
        fps=FPS,
        work_dir=work_dir / "render",
    )


def peak_child_rss_mb() -> float:
    """Largest resident set of any finished child process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def _encoder_args(video_bitrate: int) -> list[str]:
    args: list[str] = []
    for option, value in video_encoder_options(video_bitrate).items():
        args += [f"-{option}", str(value)]
    return args


def _time_raw_encode(raw_path: Path, frames: int, video_bitrate: int, out_path: Path) -> Timing:
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
        f"{SIZE[0]}x{SIZE[1]}",
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


def _to_raw(source: Path, raw_path: Path) -> Path:
    subprocess.run(
        [
            ffmpeg_exe(),
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-i",
            str(source),
            "-vf",
            f"scale={SIZE[0]}:{SIZE[1]}",
            "-pix_fmt",
            "yuv420p",
            "-f",
            "rawvideo",
            str(raw_path),
        ],
        check=True,
    )
    return raw_path


def time_encode_floor(still: Path, frames: int, video_bitrate: int, work_dir: Path) -> Timing:
    """The brief's floor: one still frame looped, encoded with the render's x264 settings."""
    raw_frame = _to_raw(still, work_dir / "floor_frame.yuv")
    return _time_raw_encode(raw_frame, frames, video_bitrate, work_dir / "floor.mp4")


def time_encode_same_frames(video: Path, frames: int, video_bitrate: int, work_dir: Path) -> Timing:
    """x264 alone re-encoding the rendered frames themselves (decoded beforehand): the cost
    of encoding this moving content, without the render's decoding and filtering."""
    raw_frames = _to_raw(video, work_dir / "rendered_frames.yuv")
    try:
        return _time_raw_encode(raw_frames, frames, video_bitrate, work_dir / "same_frames.mp4")
    finally:
        raw_frames.unlink()


def run_render_bench(work_dir: Path, repeats: int = REPEATS) -> dict[str, Any]:
    """Best-of-`repeats` timings of the render and of both encode floors."""
    plan, images, audios, durations = prepare_inputs(work_dir)
    voice_seconds = sum(durations)
    padded_seconds = voice_seconds + gap_seconds_for(durations) * len(durations)
    render_runs = [
        timed(lambda: render_once(plan, images, audios, durations, work_dir))
        for _ in range(repeats)
    ]
    peak_rss_mb = peak_child_rss_mb()
    render = best([timing for timing, _ in render_runs])
    result = render_runs[-1][1]
    frames = round(result.duration * FPS)
    bitrate = video_bitrate_for(padded_seconds, SIZE, MAX_BYTES)
    floor = best([time_encode_floor(images[0], frames, bitrate, work_dir) for _ in range(repeats)])
    same_frames = best(
        [time_encode_same_frames(result.path, frames, bitrate, work_dir) for _ in range(repeats)]
    )
    print(
        f"scenes={len(plan.scenes)} video_s={result.duration:.2f} voice_s={voice_seconds:.2f} "
        f"frames={frames} size_mb={result.size_bytes / 1e6:.2f} peak_rss_mb={peak_rss_mb:.0f}"
    )
    for name, timing in (
        ("render", render),
        ("encode floor (own frames)", same_frames),
        ("still floor", floor),
    ):
        print(f"{name}: wall_s={timing.wall_s:.2f} cpu_s={timing.cpu_s:.2f}")
    return {
        "bench": "render",
        "render_s": round(render.wall_s, 3),
        "encode_floor_s": round(same_frames.wall_s, 3),
        "ratio": round(render.wall_s / same_frames.wall_s, 3),
        "ratio_cpu": round(render.cpu_s / same_frames.cpu_s, 3),
        "peak_rss_mb": round(peak_rss_mb, 1),
        "still_floor_s": round(floor.wall_s, 3),
        "ratio_still": round(render.wall_s / floor.wall_s, 3),
    }


def time_e2e() -> float:
    """Seconds from the storyboard approval to the video arriving at the local Bot API server,
    through the real worker, on embedded PostgreSQL (or DATABASE_URL) in a throw-away schema."""
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
            run_tick(settings, database, client, providers)
            telegram.wait_for("sendVideo", timeout=120)
            return time.perf_counter() - started
        finally:
            database.execute(f"DROP SCHEMA {schema} CASCADE")
            database.close()


def main(keep_dir: Path | None = None) -> dict[str, Any]:
    """Run the benchmark, print its figures and, last, one JSON line; return that dict."""
    with tempfile.TemporaryDirectory(prefix="bench_render_") as temp:
        work_dir = keep_dir or Path(temp)
        work_dir.mkdir(parents=True, exist_ok=True)
        figures = run_render_bench(work_dir)
    figures["e2e_s"] = round(time_e2e(), 2)
    print(f"e2e: {figures['e2e_s']:.2f} s from the last approval to the delivered video")
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="keep the clip and inputs in this directory")
    main(parser.parse_args().keep)
