"""Visuals provider that needs no network: a designed Pillow title card per scene."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

from shared.imaging import LINE_SPACING, ellipsized, fit_to_box, load_font
from shared.plan import ScenePlan

logger = logging.getLogger(__name__)

RGB = tuple[int, int, int]


@dataclass(frozen=True)
class Palette:
    top: RGB
    bottom: RGB
    glow: RGB
    accent: RGB


PALETTES = (
    Palette((38, 20, 71), (200, 54, 96), (255, 140, 90), (255, 200, 87)),  # dusk
    Palette((8, 32, 62), (17, 120, 140), (80, 220, 200), (250, 220, 120)),  # lagoon
    Palette((20, 24, 38), (74, 52, 140), (140, 110, 255), (120, 230, 255)),  # night
    Palette((60, 16, 30), (222, 90, 50), (255, 190, 80), (255, 240, 200)),  # ember
    Palette((10, 48, 36), (46, 140, 90), (190, 230, 120), (255, 230, 140)),  # forest
    Palette((30, 34, 70), (220, 110, 160), (255, 180, 200), (255, 255, 255)),  # blossom
    Palette((12, 18, 28), (40, 84, 130), (230, 140, 60), (255, 200, 120)),  # harbour
    Palette((44, 12, 64), (20, 120, 190), (240, 90, 200), (150, 250, 230)),  # neon
)

_MARGIN_SHARE = 0.12  # keeps text inside what the render's pan (crop) leaves visible
_DOWNSCALE = 8  # soft shapes are drawn small and blurred, then enlarged: cheap and smooth


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


def _gradient(size: tuple[int, int], top: RGB, bottom: RGB, angle: int) -> Image.Image:
    """A linear gradient from `top` to `bottom`, tilted by `angle` degrees."""
    width, height = size
    diagonal = int((width**2 + height**2) ** 0.5) + 2
    mask = Image.linear_gradient("L").resize((diagonal, diagonal)).rotate(angle, Image.BICUBIC)
    left, upper = (diagonal - width) // 2, (diagonal - height) // 2
    mask = mask.crop((left, upper, left + width, upper + height))
    return Image.composite(Image.new("RGB", size, bottom), Image.new("RGB", size, top), mask)


def _soft_glows(size: tuple[int, int], palette: Palette, seed: bytes) -> Image.Image:
    """Three or four large blurred discs of light, placed from `seed`."""
    small = (max(size[0] // _DOWNSCALE, 1), max(size[1] // _DOWNSCALE, 1))
    layer = Image.new("RGBA", small, (*palette.glow, 0))
    draw = ImageDraw.Draw(layer)
    for index in range(3 + seed[0] % 2):
        cx = small[0] * seed[1 + index] / 255
        cy = small[1] * seed[5 + index] / 255
        radius = min(small) * (0.25 + seed[9 + index] / 255 * 0.35)
        colour = palette.glow if index % 2 == 0 else palette.accent
        alpha = 110 + seed[13 + index] % 70
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=(*colour, alpha))
    layer = layer.filter(ImageFilter.GaussianBlur(min(small) * 0.12))
    return layer.resize(size, Image.BICUBIC)


def _rings(size: tuple[int, int], palette: Palette, seed: bytes) -> Image.Image:
    """Two thin concentric circles off to one side: a quiet graphic motif."""
    width, height = size
    layer = Image.new("RGBA", size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    cx = width * (0.75 if seed[17] % 2 else 0.25)
    cy = height * (0.68 + seed[18] / 255 * 0.12)
    line_width = max(min(size) // 240, 2)
    for radius_share, alpha in ((0.42, 70), (0.30, 45)):
        radius = min(size) * radius_share
        draw.ellipse(
            (cx - radius, cy - radius, cx + radius, cy + radius),
            outline=(*palette.accent, alpha),
            width=line_width,
        )
    return layer


def _vignette(size: tuple[int, int]) -> Image.Image:
    """Black with transparency in the middle: darkens the edges and corners."""
    small = (max(size[0] // _DOWNSCALE, 1), max(size[1] // _DOWNSCALE, 1))
    mask = Image.new("L", small, 190)
    inset_x, inset_y = small[0] * 0.08, small[1] * 0.08
    ImageDraw.Draw(mask).ellipse((inset_x, inset_y, small[0] - inset_x, small[1] - inset_y), fill=0)
    mask = mask.filter(ImageFilter.GaussianBlur(min(small) * 0.18)).resize(size, Image.BICUBIC)
    vignette = Image.new("RGBA", size, (0, 0, 0, 0))
    vignette.putalpha(mask)
    return vignette


@dataclass(frozen=True)
class _Layout:
    """Where things go on a card of a given size."""

    width: int
    height: int

    @property
    def unit(self) -> int:
        return min(self.width, self.height)

    @property
    def margin_x(self) -> float:
        return self.width * _MARGIN_SHARE

    @property
    def margin_y(self) -> float:
        return self.height * 0.11

    @property
    def text_width(self) -> float:
        return self.width - 2 * self.margin_x

    @property
    def headline_top(self) -> float:
        return self.height * (0.30 if self.height > self.width else 0.28)

    @property
    def headline_height(self) -> float:
        return self.height * (0.36 if self.height > self.width else 0.44)


def _draw_header(
    draw: ImageDraw.ImageDraw, layout: _Layout, title: str, counter: str, accent: RGB
) -> None:
    """The plan title, small and upper-case, and a "2/6" scene counter in a pill."""
    font = load_font(max(int(layout.unit * 0.035), 12))
    counter_width = font.getlength(counter)
    pad = font.size * 0.6
    title = ellipsized(title.upper(), font, layout.text_width - counter_width - 3 * pad)
    top = layout.margin_y
    draw.text((layout.margin_x, top), title, font=font, fill=(255, 255, 255, 215))
    pill_right = layout.width - layout.margin_x
    pill_left = pill_right - counter_width - 2 * pad
    draw.rounded_rectangle(
        (pill_left, top - pad * 0.55, pill_right, top + font.size + pad * 0.55),
        radius=font.size,
        fill=(255, 255, 255, 40),
        outline=(*accent, 220),
        width=max(layout.unit // 360, 2),
    )
    draw.text((pill_left + pad, top), counter, font=font, fill=(255, 255, 255, 240))


def _draw_headline(
    draw: ImageDraw.ImageDraw,
    shadow_draw: ImageDraw.ImageDraw,
    layout: _Layout,
    text: str,
    accent: RGB,
) -> None:
    """The scene's on-screen text, as large as fits, under a short accent bar."""
    font, lines = fit_to_box(
        text, layout.text_width, layout.headline_height, start_size=int(layout.unit * 0.12)
    )
    left, top = layout.margin_x, layout.headline_top
    bar = max(int(layout.unit * 0.012), 3)
    draw.rounded_rectangle(
        (left, top - bar * 4, left + layout.unit * 0.14, top - bar * 3),
        radius=bar // 2,
        fill=(*accent, 255),
    )
    line_height = font.size * LINE_SPACING
    for line_no, line in enumerate(lines):
        position = (left, top + line_no * line_height)
        shadow_draw.text(position, line, font=font, fill=(0, 0, 0, 150))
        draw.text(position, line, font=font, fill=(255, 255, 255, 255))


class LocalVisuals:
    """Visuals provider drawing a designed title card per scene with Pillow."""

    def draw(
        self, plan: ScenePlan, index: int, size: tuple[int, int], out_path: Path, variant: int = 0
    ) -> None:
        if not 0 <= index < len(plan.scenes):
            raise ValueError(f"scene index {index} is outside the plan's {len(plan.scenes)} scenes")
        width, height = size
        if width < 64 or height < 64:
            raise ValueError(f"picture size {width}x{height} is too small")
        scene = plan.scenes[index]
        seed = _digest(f"{plan.title}\n{scene.narration}\n{index}\n{variant}")
        palette = PALETTES[seed[20] % len(PALETTES)]
        angle = seed[21] % 60 - 30
        card = _gradient(size, palette.top, palette.bottom, angle).convert("RGBA")
        card.alpha_composite(_soft_glows(size, palette, seed))
        card.alpha_composite(_rings(size, palette, seed))
        card.alpha_composite(_vignette(size))
        self._draw_texts(card, plan, index, palette)
        card.convert("RGB").save(out_path, format="PNG", compress_level=1)
        logger.info(
            "local visual drawn scene=%d size=%dx%d path=%s", index, width, height, out_path
        )

    @staticmethod
    def _draw_texts(card: Image.Image, plan: ScenePlan, index: int, palette: Palette) -> None:
        """Header and headline on a layer, with a blurred drop shadow under the headline."""
        layout = _Layout(*card.size)
        shadow = Image.new("RGBA", card.size, (0, 0, 0, 0))
        text_layer = Image.new("RGBA", card.size, (0, 0, 0, 0))
        draw = ImageDraw.Draw(text_layer)
        headline = plan.scenes[index].on_screen_text or plan.title
        _draw_headline(draw, ImageDraw.Draw(shadow), layout, headline, palette.accent)
        _draw_header(draw, layout, plan.title, f"{index + 1}/{len(plan.scenes)}", palette.accent)
        offset = max(layout.unit // 180, 2)
        shadow = shadow.filter(ImageFilter.GaussianBlur(layout.unit * 0.012)).transform(
            card.size, Image.AFFINE, (1, 0, -offset, 0, 1, -offset)
        )
        card.alpha_composite(shadow)
        card.alpha_composite(text_layer)
