"""Animation benchmark: local animation of a 6-scene, 30 s plan, against the x264 encode floor.

Animates every scene of the plan with LocalAnimation over LocalVisuals cards (captions on, so
the cards carry no words) and times each clip. The floor is x264 alone encoding each clip's
own frames, decoded beforehand to raw yuv420p, with the same encoder options, in the same run;
wall / floor is the cost of everything around the encoder (drawing the layers, reading them,
filtering). Best of `--repeats` runs per scene, wall and CPU time (this process and its ffmpeg
children) apart: the machine is shared. The last line printed is one JSON object.

Run from the repository root:
    python -m bench.animation [--size 720x1280] [--repeats 3] [--strip docs/animation-strip.png]
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from PIL import Image

from shared.media import ffmpeg_exe
from shared.plan import ScenePlan, plan_from_text
from shared.providers.local_animation import LocalAnimation, encoder_args
from shared.providers.local_visuals import LocalVisuals

FPS = 30
SECONDS = 30
REPEATS = 3
STRIP_FRAMES = 5
STRIP_WIDTH = 240
BENCH_TEXT = (
    "Байкал — самое глубокое озеро на планете, его возраст около двадцати пяти миллионов лет. "
    "Зимой лёд на озере становится таким прозрачным, что сквозь него видно камни на дне. "
    "В холодной воде живёт нерпа, единственный пресноводный тюлень в России. "
    "Вокруг озера растёт тайга, а в горах прячутся тихие бухты и горячие источники. "
    "Летом сюда приезжают путешественники, чтобы пройти по Большой Байкальской тропе. "
    "Берегите Байкал: это чистейший запас пресной воды для всей планеты."
)


def bench_plan() -> ScenePlan:
    return plan_from_text(BENCH_TEXT, "ru", SECONDS)


def scene_seconds(plan: ScenePlan) -> list[float]:
    """The plan's scene durations scaled to add up to exactly SECONDS."""
    total = sum(scene.duration for scene in plan.scenes)
    return [scene.duration * SECONDS / total for scene in plan.scenes]


@dataclass(frozen=True)
class Timing:
    wall_s: float
    cpu_s: float  # user + system time of this process and of the children it waited for


def _cpu_s() -> float:
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def timed(action: Callable[..., object], *args: Any) -> Timing:
    cpu_before, started = _cpu_s(), time.perf_counter()
    action(*args)
    return Timing(time.perf_counter() - started, _cpu_s() - cpu_before)


def best(timings: list[Timing]) -> Timing:
    """Fastest wall time and least CPU time of several runs: the machine is shared."""
    return Timing(min(t.wall_s for t in timings), min(t.cpu_s for t in timings))


def _ffmpeg(*args: str) -> None:
    subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *args], check=True
    )


def time_floor(clip: Path, size: tuple[int, int], work_dir: Path) -> Timing:
    """x264 alone encoding the clip's own frames, decoded beforehand and fed as rawvideo."""
    raw = work_dir / "frames.yuv"
    _ffmpeg("-i", str(clip), "-pix_fmt", "yuv420p", "-f", "rawvideo", str(raw))
    try:
        return timed(
            _ffmpeg,
            *("-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", f"{size[0]}x{size[1]}"),
            *("-framerate", str(FPS), "-i", str(raw)),
            *encoder_args(),
            *("-an", str(work_dir / "floor.mp4")),
        )
    finally:
        raw.unlink()


def write_strip(clip: Path, out_path: Path, frames: int = STRIP_FRAMES) -> Path:
    """A PNG of `frames` frames of `clip`, evenly spaced from its first to its last frame,
    side by side, each scaled to STRIP_WIDTH pixels wide."""
    with tempfile.TemporaryDirectory(prefix="strip_") as temp:
        pattern = Path(temp) / "frame_%04d.png"
        _ffmpeg("-i", str(clip), "-vf", f"scale={STRIP_WIDTH}:-2", str(pattern))
        stills = sorted(Path(temp).glob("frame_*.png"))
        chosen = [stills[round(i * (len(stills) - 1) / (frames - 1))] for i in range(frames)]
        pictures = [Image.open(path).convert("RGB") for path in chosen]
    gap = 8
    width = sum(p.width for p in pictures) + gap * (frames - 1)
    strip = Image.new("RGB", (width, pictures[0].height), (255, 255, 255))
    for number, picture in enumerate(pictures):
        strip.paste(picture, (number * (picture.width + gap), 0))
    strip.save(out_path, format="PNG", optimize=True)
    return out_path


def run(size: tuple[int, int], repeats: int, strip: Path | None = None) -> dict[str, Any]:
    """Best-of-`repeats` timings per scene of the animation and of its floor, each floor taken
    right after its clip so that both see the same load on the machine."""
    plan = bench_plan()
    seconds = scene_seconds(plan)
    visuals = LocalVisuals(show_words=False)
    animation = LocalAnimation(visuals)
    walls: list[list[Timing]] = [[] for _ in seconds]
    floors: list[list[Timing]] = [[] for _ in seconds]
    with tempfile.TemporaryDirectory(prefix="bench_animation_") as temp:
        work_dir = Path(temp)
        for _ in range(repeats):
            for index, scene_s in enumerate(seconds):
                still, clip = work_dir / f"scene_{index}.png", work_dir / f"scene_{index}.mp4"
                visuals.draw(plan, index, size, still)
                walls[index].append(
                    timed(animation.animate, still, plan, index, scene_s, size, FPS, clip)
                )
                floors[index].append(time_floor(clip, size, work_dir))
        if strip is not None:
            write_strip(work_dir / "scene_0.mp4", strip)
    animated = [best(timings) for timings in walls]
    floor = [best(timings) for timings in floors]
    for index, (anim, encode) in enumerate(zip(animated, floor)):
        print(
            f"scene {index}: seconds={seconds[index]:.2f} wall_s={anim.wall_s:.2f} "
            f"floor_s={encode.wall_s:.2f} ratio={anim.wall_s / encode.wall_s:.2f} "
            f"cpu_s={anim.cpu_s:.2f} floor_cpu_s={encode.cpu_s:.2f}"
        )
    wall_s, floor_s = sum(t.wall_s for t in animated), sum(t.wall_s for t in floor)
    cpu_s, floor_cpu_s = sum(t.cpu_s for t in animated), sum(t.cpu_s for t in floor)
    print(
        f"total {size[0]}x{size[1]}: wall_s={wall_s:.2f} floor_s={floor_s:.2f} "
        f"cpu_s={cpu_s:.2f} floor_cpu_s={floor_cpu_s:.2f} (best of {repeats})"
    )
    return {
        "bench": "animation",
        "size": f"{size[0]}x{size[1]}",
        "scenes": len(plan.scenes),
        "seconds": SECONDS,
        "wall_s": round(wall_s, 3),
        "floor_s": round(floor_s, 3),
        "ratio": round(wall_s / floor_s, 3),
        "cpu_s": round(cpu_s, 3),
        "floor_cpu_s": round(floor_cpu_s, 3),
        "ratio_cpu": round(cpu_s / floor_cpu_s, 3),
    }


def _size(text: str) -> tuple[int, int]:
    width, _, height = text.partition("x")
    return int(width), int(height)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=_size, default=(720, 1280), help="WIDTHxHEIGHT")
    parser.add_argument("--repeats", type=int, default=REPEATS)
    parser.add_argument("--strip", type=Path, help="also write a 5-frame strip of scene 1 here")
    arguments = parser.parse_args()
    print(json.dumps(run(arguments.size, arguments.repeats, arguments.strip)))
