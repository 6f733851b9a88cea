"""Providers that need no network: text splitting, espeak-ng speech, Pillow title cards."""

from __future__ import annotations

import ctypes
import hashlib
import logging
import threading
import wave
from dataclasses import dataclass
from pathlib import Path

import espeakng_loader
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from shared.media import FONT_PATH
from shared.plan import ScenePlan, plan_from_text

logger = logging.getLogger(__name__)

ESPEAK_VOICES = {"ru": "ru", "en": "en"}


class LocalScript:
    """Script provider that turns the description itself into scenes (see `plan_from_text`)."""

    def write(self, description: str, language: str, seconds: int, variant: int = 0) -> ScenePlan:
        """Variant n > 0 (a "regenerate" press) keeps the user's sentences, the narration, but
        frames them anew: its title comes from the n-th sentence and the stills get a new look."""
        title = None
        if variant:
            sentences = plan_from_text(description, language, seconds).scenes
            title = sentences[variant % len(sentences)].on_screen_text
        plan = plan_from_text(description, language, seconds, title=title)
        logger.info("local script written scenes=%d title=%r", len(plan.scenes), plan.title)
        return plan


# --- espeak-ng through ctypes ---

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_ESPEAK_CHARS_UTF8 = 1
_ESPEAK_RATE = 1
_EE_OK = 0
_SAMPLE_BYTES = 2
_TAIL_SILENCE_S = 0.15
_MIN_AUDIO_S = 0.5

_SynthCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


class _Espeak:
    """The process-global espeak-ng library: initialised once, used under one lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._chunks: list[bytes] = []
        self._library = ctypes.CDLL(espeakng_loader.get_library_path())
        self._declare_signatures()
        data_path = espeakng_loader.get_data_path().encode()
        self.sample_rate = self._library.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path, 0
        )
        if self.sample_rate <= 0:
            raise RuntimeError(f"espeak-ng failed to initialise with data at {data_path!r}")
        # Kept on self: ctypes must not garbage-collect a callback the C library still holds.
        self._callback = _SynthCallback(self._collect)
        self._library.espeak_SetSynthCallback(self._callback)

    def _declare_signatures(self) -> None:
        lib = self._library
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
            ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
        ]
        lib.espeak_Synth.restype = ctypes.c_int

    def _collect(self, samples: ctypes.Array, count: int, _events: int) -> int:
        if count > 0:
            self._chunks.append(ctypes.string_at(samples, count * _SAMPLE_BYTES))
        return 0

    def synthesize(self, text: str, voice: str, words_per_minute: int) -> bytes:
        """16-bit mono PCM at `sample_rate` for `text`. Call with `lock` held."""
        self._chunks = []
        if self._library.espeak_SetVoiceByName(voice.encode()) != _EE_OK:
            raise RuntimeError(f"espeak-ng has no voice {voice!r}")
        self._library.espeak_SetParameter(_ESPEAK_RATE, words_per_minute, 0)
        encoded = text.encode("utf-8")
        status = self._library.espeak_Synth(
            encoded, len(encoded) + 1, 0, _POS_CHARACTER, 0, _ESPEAK_CHARS_UTF8, None, None
        )
        if status != _EE_OK:
            raise RuntimeError(f"espeak-ng synthesis failed with status {status}")
        return b"".join(self._chunks)


_engine: _Espeak | None = None
_engine_lock = threading.Lock()


def _espeak() -> _Espeak:
    global _engine
    with _engine_lock:
        if _engine is None:
            _engine = _Espeak()
        return _engine


class LocalVoice:
    """Voice provider speaking with espeak-ng; writes a mono 16-bit WAV."""

    def __init__(self, words_per_minute: int = 155) -> None:
        self.words_per_minute = words_per_minute

    def speak(self, text: str, language: str, out_path: Path) -> float:
        if not text or not text.strip():
            raise ValueError("nothing to speak: the text is empty")
        voice = ESPEAK_VOICES.get(language)
        if voice is None:
            raise ValueError(
                f"no local voice for language {language!r}; use one of {sorted(ESPEAK_VOICES)}"
            )
        engine = _espeak()
        with engine.lock:
            pcm = engine.synthesize(text.strip(), voice, self.words_per_minute)
        pcm = self._with_silence(pcm, engine.sample_rate)
        out_path = Path(out_path)
        with wave.open(str(out_path), "wb") as wav:
            wav.setnchannels(1)
            wav.setsampwidth(_SAMPLE_BYTES)
            wav.setframerate(engine.sample_rate)
            wav.writeframes(pcm)
        seconds = len(pcm) / _SAMPLE_BYTES / engine.sample_rate
        logger.info(
            "local voice spoken language=%s seconds=%.2f path=%s", language, seconds, out_path
        )
        return seconds

    @staticmethod
    def _with_silence(pcm: bytes, sample_rate: int) -> bytes:
        """Add a short tail so words are not cut, and never return less than `_MIN_AUDIO_S`."""
        tail_samples = int(_TAIL_SILENCE_S * sample_rate)
        short_by = int(_MIN_AUDIO_S * sample_rate) - len(pcm) // _SAMPLE_BYTES - tail_samples
        if short_by > 0:
            logger.warning("espeak produced almost no audio; padding with silence")
        silence_samples = tail_samples + max(short_by, 0)
        return pcm + b"\x00" * (silence_samples * _SAMPLE_BYTES)


# --- Pillow title cards ---

RGB = tuple[int, int, int]


@dataclass(frozen=True)
class Palette:
    top: RGB
    bottom: RGB
    glow: RGB
    accent: RGB


PALETTES = (
    Palette((38, 20, 71), (200, 54, 96), (255, 140, 90), (255, 200, 87)),    # dusk
    Palette((8, 32, 62), (17, 120, 140), (80, 220, 200), (250, 220, 120)),   # lagoon
    Palette((20, 24, 38), (74, 52, 140), (140, 110, 255), (120, 230, 255)),  # night
    Palette((60, 16, 30), (222, 90, 50), (255, 190, 80), (255, 240, 200)),   # ember
    Palette((10, 48, 36), (46, 140, 90), (190, 230, 120), (255, 230, 140)),  # forest
    Palette((30, 34, 70), (220, 110, 160), (255, 180, 200), (255, 255, 255)),  # blossom
    Palette((12, 18, 28), (40, 84, 130), (230, 140, 60), (255, 200, 120)),   # harbour
    Palette((44, 12, 64), (20, 120, 190), (240, 90, 200), (150, 250, 230)),  # neon
)

_MARGIN_SHARE = 0.12  # keeps text inside what the render's pan (crop) leaves visible
_DOWNSCALE = 8  # soft shapes are drawn small and blurred, then enlarged: cheap and smooth


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


def _font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(FONT_PATH), size)


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


def _wrap(text: str, font: ImageFont.FreeTypeFont, max_width: float) -> list[str]:
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


def _fit_headline(
    text: str, box_width: float, box_height: float, start_size: int, max_lines: int = 5
) -> tuple[ImageFont.FreeTypeFont, list[str]]:
    """The largest font size (from `start_size` down) at which `text` fits the box."""
    size = start_size
    while True:
        font = _font(size)
        lines = _wrap(text, font, box_width)
        line_height = size * 1.18
        words_fit = all(font.getlength(word) <= box_width for word in text.split())
        fits = words_fit and len(lines) <= max_lines and len(lines) * line_height <= box_height
        if fits or size <= 14:
            return font, lines
        size = int(size * 0.9)


def ellipsized(text: str, font: ImageFont.FreeTypeFont, max_width: float) -> str:
    if font.getlength(text) <= max_width:
        return text
    while text and font.getlength(text + "…") > max_width:
        text = text[:-1]
    return text.rstrip() + "…"


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
    font = _font(max(int(layout.unit * 0.035), 12))
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
    font, lines = _fit_headline(
        text, layout.text_width, layout.headline_height, start_size=int(layout.unit * 0.12)
    )
    left, top = layout.margin_x, layout.headline_top
    bar = max(int(layout.unit * 0.012), 3)
    draw.rounded_rectangle(
        (left, top - bar * 4, left + layout.unit * 0.14, top - bar * 3),
        radius=bar // 2,
        fill=(*accent, 255),
    )
    line_height = font.size * 1.18
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
            raise ValueError(
                f"scene index {index} is outside the plan's {len(plan.scenes)} scenes"
            )
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
