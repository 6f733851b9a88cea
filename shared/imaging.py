"""Text on pictures with Pillow: the bundled font, and fitting text into a box.

Shared by the local title cards and the storyboard; nothing here needs a provider.
"""

from __future__ import annotations

from PIL import ImageFont

from shared.media import FONT_PATH
from shared.plan import shorten

LINE_SPACING = 1.18  # line height as a share of the font size
MIN_FONT_SIZE = 14
_SHRINK_STEP = 0.9


def load_font(size: int) -> ImageFont.FreeTypeFont:
    """The bundled bold font (Latin and Cyrillic) at `size` pixels."""
    return ImageFont.truetype(str(FONT_PATH), size)


def wrap(text: str, font: ImageFont.FreeTypeFont, max_width: float) -> list[str]:
    """Greedy word wrap; a word wider than the line is split by characters."""
    lines: list[str] = []
    current = ""
    for word in text.split():
        candidate = f"{current} {word}".strip()
        if font.getlength(candidate) <= max_width:
            current = candidate
            continue
        if current:
            lines.append(current)
        current = ""
        for char in word:
            if font.getlength(current + char) > max_width and current:
                lines.append(current)
                current = ""
            current += char
    if current:
        lines.append(current)
    return lines


def fit_to_box(
    text: str, box_width: float, box_height: float, start_size: int, max_lines: int = 5
) -> tuple[ImageFont.FreeTypeFont, list[str]]:
    """The largest font (from `start_size` down) at which `text`, wrapped, fits the box, and its
    lines; below `MIN_FONT_SIZE` the text is returned as it wraps, fitting or not."""
    size = start_size
    while True:
        sized = load_font(size)
        lines = wrap(text, sized, box_width)
        line_height = size * LINE_SPACING
        words_fit = all(sized.getlength(word) <= box_width for word in text.split())
        fits = words_fit and len(lines) <= max_lines and len(lines) * line_height <= box_height
        if fits or size <= MIN_FONT_SIZE:
            return sized, lines
        size = int(size * _SHRINK_STEP)


def ellipsized(text: str, font: ImageFont.FreeTypeFont, max_width: float) -> str:
    """`text` cut to at most `max_width` pixels in `font`, ending with "…" when cut."""
    return shorten(text, max_width, font.getlength)
