"""Animation provider that needs no network: parallax motion made by one ffmpeg pass per scene.

Motion is drawn by ffmpeg, not per frame in Python: each layer is an image read once and
repeated by the `loop` filter, the background moves as a `crop` window (a pointer offset) and
every other layer is an `overlay` whose position is an expression of the frame number. Layers
are cropped to their visible pixels first, since overlay blends its whole input every frame.
So the cost stays close to x264's own (see bench/animation.py).

With `visuals` (the stills are LocalVisuals cards) the card is rebuilt as layers and they
move at different speeds and directions: the far gradient slowly, the glows the other way, the
ring motif faster with a spark orbiting on it, a soft band of light sweeping across once, and
the text, counter and vignette floating a few pixels. Without it (stills from another
provider) the still itself pans slowly under a light leak drifting faster the same way and a
faint foreground of out-of-focus specks rising across it: parallax rather than a zoom.

Motion uses p = n / (frames - 1): eased travel -cos(pi p) and whole sine periods, so clips
start and end at rest-like speeds and the sines come back to where they started.
"""

from __future__ import annotations

import hashlib
import logging
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from PIL import Image, ImageDraw, ImageFilter

from shared.media import ffmpeg_exe
from shared.pipeline.render import PRESET, run_ffmpeg
from shared.plan import ScenePlan
from shared.providers.local_visuals import PALETTES, CardLayers, LocalVisuals, Size

logger = logging.getLogger(__name__)

CRF = 20  # a notch above the render's quality: the clip is encoded again by the final render
BLEED_SHARE = 0.12  # layers extend this share of the short side beyond each edge of the frame
STILL_SCALE = 1.14  # a foreign still is enlarged this much so that its pan has room
ANIMATION_TIMEOUT_S = 300
_SOFT_DOWNSCALE = 8  # soft shapes are drawn small and blurred, then enlarged


def encoder_args() -> list[str]:
    """x264 options of the clips (also the bench's encode floor): the render's preset."""
    return ["-c:v", "libx264", "-preset", PRESET, "-crf", str(CRF), "-pix_fmt", "yuv420p"]


@dataclass(frozen=True)
class _Overlay:
    """A layer image and where its top-left corner is at frame n (ffmpeg expressions)."""

    image: Image.Image
    x: str
    y: str


def _sign(byte: int) -> int:
    return 1 if byte % 2 else -1


def _eased(frames: int) -> str:
    """-1 at the first frame to 1 at the last, slow at both ends."""
    return f"(-cos(PI*n/{max(frames - 1, 1)}))"


def _linear(frames: int) -> str:
    """-1 at the first frame to 1 at the last, at a steady speed."""
    return f"(2*n/{max(frames - 1, 1)}-1)"


def _wave(frames: int, periods: float, phase_byte: int) -> str:
    """A sine over the clip, `periods` whole turns, starting at a phase from the seed."""
    phase = phase_byte / 255 * 2 * math.pi
    return f"sin({2 * math.pi * periods:.5f}*n/{max(frames - 1, 1)}+{phase:.4f})"


def _visible(image: Image.Image, x: float, y: float) -> tuple[Image.Image, float, float]:
    """`image` cropped to its non-transparent box, and where that box's corner then goes."""
    box = image.getchannel("A").getbbox()
    if box is None:
        box = (0, 0, 1, 1)
    return image.crop(box), x + box[0], y + box[1]


def _moving(image: Image.Image, x: float, y: float, dx: str, dy: str) -> _Overlay:
    """An overlay resting at (x, y) and displaced by the expressions `dx`, `dy`."""
    cropped, left, top = _visible(image, x, y)
    return _Overlay(cropped, f"{left:.1f}+{dx}", f"{top:.1f}+{dy}")


def _soft_blobs(
    size: Size, blobs: Sequence[tuple[float, float, float, tuple[int, int, int, int]]]
) -> Image.Image:
    """Blurred discs (centre x, centre y, radius in pixels, RGBA) on a transparent layer."""
    small = (max(size[0] // _SOFT_DOWNSCALE, 1), max(size[1] // _SOFT_DOWNSCALE, 1))
    layer = Image.new("RGBA", small, (255, 255, 255, 0))
    draw = ImageDraw.Draw(layer)
    for cx, cy, radius, colour in blobs:
        cx, cy, radius = (value / _SOFT_DOWNSCALE for value in (cx, cy, radius))
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=colour)
    layer = layer.filter(ImageFilter.GaussianBlur(min(small) * 0.08))
    return layer.resize(size, Image.BICUBIC)


def _spark(unit: int, colour: tuple[int, int, int]) -> Image.Image:
    """A small bright dot with a halo."""
    side = max(unit // 14, 8) // 2 * 2
    layer = Image.new("RGBA", (side, side), (*colour, 0))
    draw = ImageDraw.Draw(layer)
    halo, core = side * 0.42, side * 0.12
    centre = side / 2
    draw.ellipse((centre - halo,) * 2 + (centre + halo,) * 2, fill=(*colour, 110))
    layer = layer.filter(ImageFilter.GaussianBlur(side * 0.12))
    ImageDraw.Draw(layer).ellipse(
        (centre - core,) * 2 + (centre + core,) * 2, fill=(255, 255, 255, 235)
    )
    return layer


def _sweep(size: Size, colour: tuple[int, int, int]) -> Image.Image:
    """A tall, slanted, soft band of light about half the frame wide."""
    width, height = size[0] // 2, size[1]
    small = (max(width // _SOFT_DOWNSCALE, 2), max(height // _SOFT_DOWNSCALE, 2))
    mask = Image.new("L", small, 0)
    band, slant = small[0] * 0.28, small[0] * 0.3
    middle = small[0] / 2
    ImageDraw.Draw(mask).polygon(
        [
            (middle - band / 2 + slant, 0),
            (middle + band / 2 + slant, 0),
            (middle + band / 2 - slant, small[1]),
            (middle - band / 2 - slant, small[1]),
        ],
        fill=70,
    )
    mask = mask.filter(ImageFilter.GaussianBlur(small[0] * 0.07)).resize((width, height))
    layer = Image.new("RGBA", (width, height), colour)
    layer.putalpha(mask)
    return layer


def _front(layers: CardLayers, pad: int) -> Image.Image:
    """Vignette, shadow and text as one layer, `pad` pixels larger on each side (the vignette
    stretched by as much, which cannot be seen) so that it can float without showing an edge."""
    width, height = layers.size
    padded = (width + 2 * pad, height + 2 * pad)
    front = layers.vignette.resize(padded, Image.BICUBIC)
    text = Image.alpha_composite(layers.shadow, layers.text)
    front.alpha_composite(text, (pad, pad))
    return front


def _lighten(colour: tuple[int, int, int], share: float) -> tuple[int, int, int]:
    red, green, blue = (int(c + (255 - c) * share) for c in colour)
    return red, green, blue


@dataclass(frozen=True)
class _Scene:
    """What one ffmpeg pass draws: a background moved by crop, and overlays on top of it."""

    background: Image.Image
    crop_x: str
    crop_y: str
    overlays: tuple[_Overlay, ...]


def _card_scene(layers: CardLayers, frames: int) -> _Scene:
    """Parallax of a LocalVisuals card: far layers slow, near layers fast, text nearly still."""
    seed = layers.seed
    width, height = layers.size
    unit = min(width, height)
    bleed_x, bleed_y = layers.bleed
    eased = _eased(frames)
    sx, sy = _sign(seed[22]), _sign(seed[23])
    # On screen the background moves (sx, sy) slowly, the motif the same way twice as far and
    # the glows the other way. The crop window moves against the picture it shows.
    crop_x = f"{bleed_x}+{-sx * 0.05 * unit:.1f}*{eased}"
    crop_y = f"{bleed_y}+{-sy * 0.04 * unit:.1f}*{eased}"
    light = _moving(
        layers.light,
        -bleed_x,
        -bleed_y,
        f"{-sx * 0.08 * unit:.1f}*{eased}",
        f"{0.03 * unit:.1f}*{_wave(frames, 1, seed[24])}",
    )
    motif_dx = f"{sx * 0.10 * unit:.1f}*{eased}"
    motif_dy = f"{sy * 0.06 * unit:.1f}*{eased}"
    motif = _moving(layers.motif, -bleed_x, -bleed_y, motif_dx, motif_dy)
    # a spark travelling along the outer ring (and moving with it)
    spark = _spark(unit, _lighten(layers.palette.accent, 0.3))
    half = spark.width / 2
    turn = _sign(seed[25]) * 2 * math.pi * (0.22 + seed[26] / 255 * 0.12)
    start = seed[27] / 255 * 2 * math.pi
    angle = f"({start:.4f}+{turn:.4f}*n/{max(frames - 1, 1)})"
    cx, cy = layers.ring_centre
    radius = layers.ring_radius
    spark_overlay = _Overlay(
        spark,
        f"{cx - half:.1f}+{motif_dx}+{radius:.1f}*cos{angle}",
        f"{cy - half:.1f}+{motif_dy}+{radius:.1f}*sin{angle}",
    )
    # a band of light crossing the frame once, off-screen at both ends
    sweep = _sweep(layers.size, _lighten(layers.palette.glow, 0.6))
    travel = (width + sweep.width) / 2
    sweep_x = f"{(width - sweep.width) / 2:.1f}+{_sign(seed[28]) * travel:.1f}*{_linear(frames)}"
    # vignette and text: nearly still, floating a few pixels
    float_x, float_y = 0.003 * width, 0.006 * height
    pad = math.ceil(max(float_x, float_y)) + 2
    front = _front(layers, pad)
    float_dx = f"{float_x:.1f}*{_wave(frames, 1, seed[30])}"
    float_dy = f"{float_y:.1f}*{_wave(frames, 1, seed[29])}"
    overlays = (
        light,
        motif,
        spark_overlay,
        _Overlay(sweep, sweep_x, "0"),
        _moving(front, -pad, -pad, float_dx, float_dy),
    )
    return _Scene(layers.background, crop_x, crop_y, overlays)


def _still_scene(still: Image.Image, size: Size, seed: bytes, frames: int) -> _Scene:
    """A foreign still: a slow pan, a light leak drifting faster the same way, specks rising."""
    width, height = size
    unit = min(width, height)
    canvas = (int(width * STILL_SCALE) // 2 * 2, int(height * STILL_SCALE) // 2 * 2)
    scale = max(canvas[0] / still.width, canvas[1] / still.height)
    scaled = (
        max(round(still.width * scale), canvas[0]),
        max(round(still.height * scale), canvas[1]),
    )
    still = still.convert("RGB").resize(scaled, Image.LANCZOS)
    left, top = (scaled[0] - canvas[0]) // 2, (scaled[1] - canvas[1]) // 2
    background = still.crop((left, top, left + canvas[0], top + canvas[1]))
    spare_x, spare_y = (canvas[0] - width) / 2, (canvas[1] - height) / 2
    eased = _eased(frames)
    sx, sy = _sign(seed[0]), _sign(seed[1])
    crop_x = f"{spare_x:.1f}+{sx * 0.85 * spare_x:.1f}*{eased}"
    crop_y = f"{spare_y:.1f}+{sy * 0.5 * spare_y:.1f}*{eased}"
    palette = PALETTES[seed[2] % len(PALETTES)]
    # light leak: two or three big soft blobs, larger than the frame, faster than the pan
    bleed = int(0.25 * unit)
    leak_size = (width + 2 * bleed, height + 2 * bleed)
    blobs = [
        (
            leak_size[0] * (0.1 + 0.8 * seed[3 + i] / 255),
            leak_size[1] * (0.1 + 0.8 * seed[6 + i] / 255),
            unit * (0.25 + 0.2 * seed[9 + i] / 255),
            (*(palette.glow if i % 2 == 0 else palette.accent), 55 + seed[12 + i] % 35),
        )
        for i in range(2 + seed[15] % 2)
    ]
    leak = _moving(
        _soft_blobs(leak_size, blobs),
        -bleed,
        -bleed,
        f"{-sx * 0.18 * unit:.1f}*{eased}",
        f"{0.06 * unit:.1f}*{_wave(frames, 1, seed[16])}",
    )
    # foreground: faint out-of-focus specks rising faster than anything behind them
    rise = int(0.2 * height) // 2 * 2
    specks = _specks((width, height + rise), unit, _lighten(palette.accent, 0.5), seed)
    foreground = _moving(
        specks,
        0,
        0,
        f"{0.015 * unit:.1f}*{_wave(frames, 1, seed[17])}",
        f"{-rise / 2:.1f}+{-rise / 2:.1f}*{_linear(frames)}",
    )
    return _Scene(background, crop_x, crop_y, (leak, foreground))


def _specks(size: Size, unit: int, colour: tuple[int, int, int], seed: bytes) -> Image.Image:
    """Twenty faint soft dots of different sizes scattered over a layer of `size`."""
    half = (max(size[0] // 2, 1), max(size[1] // 2, 1))
    layer = Image.new("RGBA", half, (*colour, 0))
    draw = ImageDraw.Draw(layer)
    for number in range(20):
        dot = hashlib.sha256(seed + bytes([number])).digest()
        cx, cy = half[0] * dot[0] / 255, half[1] * dot[1] / 255
        radius = unit / 2 * (0.006 + 0.02 * dot[2] / 255)
        alpha = 50 + dot[3] % 70
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=(*colour, alpha))
    return layer.filter(ImageFilter.GaussianBlur(unit / 2 * 0.004)).resize(size, Image.BICUBIC)


def _command(
    scene: _Scene, size: Size, fps: int, frames: int, work_dir: Path, out: Path
) -> list[str]:
    """ffmpeg arguments drawing `scene`: every layer a raw image input repeated by `loop`, the
    background cropped by a moving window, the others overlaid at moving positions."""
    args = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-nostats", "-loglevel", "error", "-y"]
    images = [scene.background, *(overlay.image for overlay in scene.overlays)]
    for number, image in enumerate(images):
        path = work_dir / f"layer_{number}.raw"
        path.write_bytes(image.tobytes())  # raw pixels: PNG would cost more than the filters
        pixel_format = "rgba" if image.mode == "RGBA" else "rgb24"
        args += ["-f", "rawvideo", "-pix_fmt", pixel_format, "-s", f"{image.width}x{image.height}"]
        args += ["-framerate", str(fps), "-i", str(path)]
    repeat = f"loop=loop={frames - 1}:size=1:start=0,setpts=N/FRAME_RATE/TB"
    width, height = size
    chains = [
        f"[0:v]format=yuv420p,{repeat},"
        f"crop=w={width}:h={height}:x={scene.crop_x}:y={scene.crop_y}[v0]"
    ]
    for number, overlay in enumerate(scene.overlays, start=1):
        chains.append(f"[{number}:v]format=yuva420p,{repeat}[layer{number}]")
        chains.append(
            f"[v{number - 1}][layer{number}]overlay=x={overlay.x}:y={overlay.y}:eval=frame"
            f"[v{number}]"
        )
    chains.append(f"[v{len(scene.overlays)}]setsar=1[out]")
    return [
        *args,
        "-filter_complex",
        ";".join(chains),
        "-map",
        "[out]",
        "-frames:v",
        str(frames),
        "-r",
        str(fps),
        *encoder_args(),
        "-movflags",
        "+faststart",
        "-an",
        str(out),
    ]


class LocalAnimation:
    """Local animator (LocalAnimator): parallax of the card's layers when `visuals` drew the
    stills, otherwise a pan of the still under moving light and foreground layers.

    With `visuals` the still file is not read: the card is rebuilt, as layers, from the same
    plan, scene, size and variant."""

    def __init__(self, visuals: LocalVisuals | None = None) -> None:
        self.visuals = visuals

    def animate(
        self,
        still: Path,
        plan: ScenePlan,
        index: int,
        seconds: float,
        size: Size,
        fps: int,
        out_path: Path,
        variant: int = 0,
    ) -> None:
        """Raises ValueError for a bad request, FileNotFoundError for a missing foreign still and
        shared.pipeline.render.RenderError when ffmpeg fails."""
        _validate(still, plan, index, seconds, size, fps, needs_still=self.visuals is None)
        out_path = Path(out_path)
        frames = max(round(seconds * fps), 1)
        if self.visuals is not None:
            bleed = int(BLEED_SHARE * min(size)) // 2 * 2
            layers = self.visuals.layers(plan, index, size, variant, (bleed, bleed))
            scene = _card_scene(layers, frames)
        else:
            scene_text = f"{plan.title}\n{plan.scenes[index].narration}\n{index}\n{variant}"
            seed = hashlib.sha256(scene_text.encode("utf-8")).digest()
            with Image.open(still) as image:
                scene = _still_scene(image, size, seed, frames)
        partial = out_path.with_name(f"{out_path.stem}.partial{out_path.suffix}")
        with tempfile.TemporaryDirectory(prefix="animation_") as temp:
            work_dir = Path(temp)
            args = _command(scene, size, fps, frames, work_dir, partial)
            run_ffmpeg(args, frames / fps, work_dir / "ffmpeg.log", timeout_s=ANIMATION_TIMEOUT_S)
        partial.replace(out_path)
        logger.info(
            "local animation written scene=%d variant=%d source=%s frames=%d size=%dx%d path=%s",
            index,
            variant,
            "card" if self.visuals is not None else "still",
            frames,
            size[0],
            size[1],
            out_path,
        )


def _validate(
    still: Path,
    plan: ScenePlan,
    index: int,
    seconds: float,
    size: Size,
    fps: int,
    *,
    needs_still: bool,
) -> None:
    if not 0 <= index < len(plan.scenes):
        raise ValueError(f"scene index {index} is outside the plan's {len(plan.scenes)} scenes")
    if not seconds > 0:
        raise ValueError(f"clip seconds must be positive, got {seconds}")
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    width, height = size
    if width < 64 or height < 64 or width % 2 or height % 2:
        raise ValueError(f"clip size must be even and at least 64x64, got {width}x{height}")
    if needs_still and not Path(still).is_file():
        raise FileNotFoundError(f"still not found: {still}")
