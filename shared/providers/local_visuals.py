"""Visuals provider that needs no network: a designed Pillow title card per scene.

The card is made of layers (`CardLayers`): a gradient background, soft glows of light, a ring
motif, a vignette and the text. `LocalVisuals.draw` composes them into the still;
`shared.providers.local_animation` moves them at different speeds to animate the scene.
"""

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
Size = tuple[int, int]


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
_RING_SHARES = ((0.42, 70), (0.30, 45))  # radius as a share of the short side, and alpha


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


def _padded(size: Size, bleed: Size) -> Size:
    return size[0] + 2 * bleed[0], size[1] + 2 * bleed[1]


def _gradient(size: Size, top: RGB, bottom: RGB, angle: int, bleed: Size = (0, 0)) -> Image.Image:
    """A linear gradient from `top` to `bottom`, tilted by `angle` degrees, across the frame of
    `size`; the `bleed` around the frame continues it (clamped at the end colours)."""
    width, height = size
    full_width, full_height = _padded(size, bleed)
    diagonal = int((width**2 + height**2) ** 0.5) + 2
    side = max(diagonal, int((full_width**2 + full_height**2) ** 0.5) + 2)
    mask = Image.linear_gradient("L").resize((side, diagonal))
    if side > diagonal:
        ramp, mask = mask, Image.new("L", (side, side), 0)
        ramp_top = (side - diagonal) // 2
        mask.paste(255, (0, ramp_top + diagonal, side, side))
        mask.paste(ramp, (0, ramp_top))
    mask = mask.rotate(angle, Image.BICUBIC)
    left, upper = (side - full_width) // 2, (side - full_height) // 2
    mask = mask.crop((left, upper, left + full_width, upper + full_height))
    full = (full_width, full_height)
    return Image.composite(Image.new("RGB", full, bottom), Image.new("RGB", full, top), mask)


def _soft_glows(size: Size, palette: Palette, seed: bytes, bleed: Size = (0, 0)) -> Image.Image:
    """Three or four large blurred discs of light, placed from `seed` within the frame."""
    small = (max(size[0] // _DOWNSCALE, 1), max(size[1] // _DOWNSCALE, 1))
    pad = (bleed[0] // _DOWNSCALE, bleed[1] // _DOWNSCALE)
    layer = Image.new("RGBA", _padded(small, pad), (*palette.glow, 0))
    draw = ImageDraw.Draw(layer)
    for index in range(3 + seed[0] % 2):
        cx = pad[0] + small[0] * seed[1 + index] / 255
        cy = pad[1] + small[1] * seed[5 + index] / 255
        radius = min(small) * (0.25 + seed[9 + index] / 255 * 0.35)
        colour = palette.glow if index % 2 == 0 else palette.accent
        alpha = 110 + seed[13 + index] % 70
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=(*colour, alpha))
    layer = layer.filter(ImageFilter.GaussianBlur(min(small) * 0.12))
    return layer.resize(_padded(size, bleed), Image.BICUBIC)


def _ring_centre(size: Size, seed: bytes) -> tuple[float, float]:
    width, height = size
    return width * (0.75 if seed[17] % 2 else 0.25), height * (0.68 + seed[18] / 255 * 0.12)


def _rings(size: Size, palette: Palette, seed: bytes, bleed: Size = (0, 0)) -> Image.Image:
    """Two thin concentric circles off to one side: a quiet graphic motif."""
    layer = Image.new("RGBA", _padded(size, bleed), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    cx, cy = _ring_centre(size, seed)
    cx, cy = cx + bleed[0], cy + bleed[1]
    line_width = max(min(size) // 240, 2)
    for radius_share, alpha in _RING_SHARES:
        radius = min(size) * radius_share
        draw.ellipse(
            (cx - radius, cy - radius, cx + radius, cy + radius),
            outline=(*palette.accent, alpha),
            width=line_width,
        )
    return layer


def _vignette(size: Size) -> Image.Image:
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
    draw: ImageDraw.ImageDraw, layout: _Layout, title: str | None, counter: str, accent: RGB
) -> None:
    """The plan title (when given), small and upper-case, and a "2/6" scene counter in a pill."""
    font = load_font(max(int(layout.unit * 0.035), 12))
    counter_width = font.getlength(counter)
    pad = font.size * 0.6
    top = layout.margin_y
    if title is not None:
        title = ellipsized(title.upper(), font, layout.text_width - counter_width - 3 * pad)
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


def _text_layers(
    size: Size, plan: ScenePlan, index: int, palette: Palette, show_words: bool
) -> tuple[Image.Image, Image.Image]:
    """The text and, under it, the headline's blurred drop shadow (transparent without words).

    Without words only the scene counter pill is drawn: no title, no headline."""
    layout = _Layout(*size)
    shadow = Image.new("RGBA", size, (0, 0, 0, 0))
    text = Image.new("RGBA", size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(text)
    counter = f"{index + 1}/{len(plan.scenes)}"
    if not show_words:
        _draw_header(draw, layout, None, counter, palette.accent)
        return text, shadow
    headline = plan.scenes[index].on_screen_text or plan.title
    _draw_headline(draw, ImageDraw.Draw(shadow), layout, headline, palette.accent)
    _draw_header(draw, layout, plan.title, counter, palette.accent)
    offset = max(layout.unit // 180, 2)
    shadow = shadow.filter(ImageFilter.GaussianBlur(layout.unit * 0.012)).transform(
        size, Image.AFFINE, (1, 0, -offset, 0, 1, -offset)
    )
    return text, shadow


@dataclass(frozen=True)
class CardLayers:
    """A card's layers, back to front. `background`, `light` and `motif` extend `bleed` pixels
    beyond the frame on each side (the frame is their centre), so they can move without
    showing an edge; `vignette`, `shadow` and `text` are the frame's size."""

    size: Size
    bleed: Size
    palette: Palette
    seed: bytes
    """Per scene and variant: the animation draws its directions and phases from it."""
    ring_centre: tuple[float, float]
    """The ring motif's centre in frame pixels; `ring_radius` is its outer ring's radius."""
    ring_radius: float
    background: Image.Image
    light: Image.Image
    motif: Image.Image
    vignette: Image.Image
    shadow: Image.Image
    text: Image.Image

    def compose(self) -> Image.Image:
        """The still card (RGBA): every layer in place, none moved."""
        box = (
            self.bleed[0],
            self.bleed[1],
            self.bleed[0] + self.size[0],
            self.bleed[1] + self.size[1],
        )
        card = self.background.crop(box).convert("RGBA")
        for layer in (self.light.crop(box), self.motif.crop(box), self.vignette):
            card.alpha_composite(layer)
        card.alpha_composite(self.shadow)
        card.alpha_composite(self.text)
        return card


class LocalVisuals:
    """Visuals provider drawing a designed title card per scene with Pillow.

    With `show_words=False` (burned-in captions are on, and no frame should show the same words
    twice) the card carries none of the script's words: only the art and the scene counter."""

    def __init__(self, show_words: bool = True) -> None:
        self.show_words = show_words

    def layers(
        self, plan: ScenePlan, index: int, size: Size, variant: int = 0, bleed: Size = (0, 0)
    ) -> CardLayers:
        """The layers of the card for `plan.scenes[index]`, with `bleed` pixels of background,
        light and motif around the frame on each side."""
        if not 0 <= index < len(plan.scenes):
            raise ValueError(f"scene index {index} is outside the plan's {len(plan.scenes)} scenes")
        width, height = size
        if width < 64 or height < 64:
            raise ValueError(f"picture size {width}x{height} is too small")
        if min(bleed) < 0:
            raise ValueError(f"bleed must not be negative, got {bleed}")
        scene = plan.scenes[index]
        seed = _digest(f"{plan.title}\n{scene.narration}\n{index}\n{variant}")
        palette = PALETTES[seed[20] % len(PALETTES)]
        angle = seed[21] % 60 - 30
        text, shadow = _text_layers(size, plan, index, palette, self.show_words)
        return CardLayers(
            size=size,
            bleed=bleed,
            palette=palette,
            seed=seed,
            ring_centre=_ring_centre(size, seed),
            ring_radius=min(size) * _RING_SHARES[0][0],
            background=_gradient(size, palette.top, palette.bottom, angle, bleed),
            light=_soft_glows(size, palette, seed, bleed),
            motif=_rings(size, palette, seed, bleed),
            vignette=_vignette(size),
            shadow=shadow,
            text=text,
        )

    def draw(
        self, plan: ScenePlan, index: int, size: tuple[int, int], out_path: Path, variant: int = 0
    ) -> None:
        card = self.layers(plan, index, size, variant).compose()
        card.convert("RGB").save(out_path, format="PNG", compress_level=1)
        logger.info(
            "local visual drawn scene=%d size=%dx%d show_words=%s path=%s",
            index,
            size[0],
            size[1],
            self.show_words,
            out_path,
        )
