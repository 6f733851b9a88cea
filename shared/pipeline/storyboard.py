"""A contact sheet of the scene stills, sent for approval before the video is rendered."""

from __future__ import annotations

import logging
import math
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from shared.imaging import ellipsized, load_font

logger = logging.getLogger(__name__)

TILE_LONG_SIDE = 480
GUTTER = 24
BACKGROUND = (18, 18, 24)
BADGE = (255, 255, 255)
BADGE_TEXT = (18, 18, 24)
LABEL_TEXT = (235, 235, 240)
MAX_BYTES = 10 * 1024 * 1024
MAX_SIDES_SUM = 10_000  # Telegram: width + height of a photo
JPEG_QUALITIES = (88, 75, 60)


def _columns_for(count: int, tile_size: tuple[int, int]) -> int:
    """Columns giving a roughly square sheet with few empty cells in the last row."""
    width, height = tile_size

    def score(columns: int) -> float:
        rows = math.ceil(count / columns)
        empty_cells = rows * columns - count
        return abs(math.log(columns * width / (rows * height))) + 0.5 * empty_cells

    return min(range(1, count + 1), key=score)


def _tile_size(first_image: Path) -> tuple[int, int]:
    with Image.open(first_image) as image:
        width, height = image.size
    scale = TILE_LONG_SIDE / max(width, height)
    return max(int(width * scale), 1), max(int(height * scale), 1)


def _draw_badge(
    draw: ImageDraw.ImageDraw, x: int, y: int, number: int, font: ImageFont.FreeTypeFont
) -> None:
    label = str(number)
    padding = font.size // 2
    width = font.getlength(label) + 2 * padding
    height = font.size + padding
    draw.rounded_rectangle((x, y, x + width, y + height), radius=height // 2, fill=BADGE)
    draw.text((x + padding, y + padding // 2), label, font=font, fill=BADGE_TEXT)


def make_storyboard(images: list[Path], out_path: Path, *, labels: list[str] | None = None) -> Path:
    """Write a grid of the `images`, numbered 1..n (and captioned with `labels`), to
    `out_path` (JPEG, or PNG if the suffix says so) within Telegram's photo limits."""
    if not images:
        raise ValueError("a storyboard needs at least one image")
    if labels is not None and len(labels) != len(images):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    tile_width, tile_height = _tile_size(Path(images[0]))
    badge_font = load_font(max(tile_width // 12, 14))
    label_font = load_font(max(tile_width // 18, 12))
    label_height = int(label_font.size * 1.8) if labels else 0
    columns = _columns_for(len(images), (tile_width, tile_height + label_height))
    rows = math.ceil(len(images) / columns)
    sheet_size = (
        columns * tile_width + (columns + 1) * GUTTER,
        rows * (tile_height + label_height) + (rows + 1) * GUTTER,
    )
    sheet = Image.new("RGB", sheet_size, BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    for index, image_path in enumerate(images):
        row, column = divmod(index, columns)
        x = GUTTER + column * (tile_width + GUTTER)
        y = GUTTER + row * (tile_height + label_height + GUTTER)
        with Image.open(image_path) as image:
            tile = image.convert("RGB").resize((tile_width, tile_height), Image.LANCZOS)
        sheet.paste(tile, (x, y))
        badge_y = y + tile_height - GUTTER // 2 - int(badge_font.size * 1.5)
        _draw_badge(draw, x + GUTTER // 2, badge_y, index + 1, badge_font)
        if labels:
            text = ellipsized(" ".join(labels[index].split()), label_font, tile_width)
            label_y = y + tile_height + label_font.size // 2
            draw.text((x, label_y), text, font=label_font, fill=LABEL_TEXT)
    out_path = _save_within_limits(sheet, Path(out_path))
    logger.info(
        "storyboard written tiles=%d size=%dx%d path=%s", len(images), *sheet.size, out_path
    )
    return out_path


def _save_within_limits(sheet: Image.Image, out_path: Path) -> Path:
    if sum(sheet.size) > MAX_SIDES_SUM:
        scale = MAX_SIDES_SUM / sum(sheet.size)
        sheet = sheet.resize((int(sheet.width * scale), int(sheet.height * scale)), Image.LANCZOS)
    if out_path.suffix.lower() == ".png":
        sheet.save(out_path, format="PNG", optimize=True)
    else:
        for quality in JPEG_QUALITIES:
            sheet.save(out_path, format="JPEG", quality=quality, optimize=True)
            if out_path.stat().st_size <= MAX_BYTES:
                break
    if out_path.stat().st_size > MAX_BYTES:
        raise ValueError(f"storyboard is {out_path.stat().st_size} bytes, over Telegram's 10 MB")
    return out_path
