"""Local animation for real: ffmpeg clips from card layers and from foreign stills.

Motion is measured with Pillow only: the shift of a region between two frames is the offset
at which the two crops differ least."""

from __future__ import annotations

import random
import subprocess
from pathlib import Path

import pytest
from PIL import Image, ImageChops, ImageStat

from shared.media import ffmpeg_exe, probe
from shared.plan import ScenePlan, plan_from_text
from shared.providers.local_animation import LocalAnimation
from shared.providers.local_visuals import PALETTES, CardLayers, LocalVisuals

TEXT = "Байкал — самое глубокое озеро на планете. Зимой лёд становится прозрачным. Берегите Байкал!"
SIZE = (360, 640)
FPS = 24
SECONDS = 2.0
Box = tuple[int, int, int, int]


@pytest.fixture(scope="module")
def plan() -> ScenePlan:
    return plan_from_text(TEXT, "ru", 15)


def _frame(clip: Path, frame: int) -> Image.Image:
    """Frame number `frame` of `clip`, in grey."""
    completed = subprocess.run(
        [
            *(ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-i", str(clip)),
            *("-vf", f"select=eq(n\\,{frame})", "-frames:v", "1"),
            *("-f", "rawvideo", "-pix_fmt", "gray", "-"),
        ],
        capture_output=True,
        check=True,
    )
    return Image.frombytes("L", SIZE, completed.stdout)


def _mean_difference(first: Image.Image, second: Image.Image) -> float:
    return ImageStat.Stat(ImageChops.difference(first, second)).mean[0]


def _shift(first: Image.Image, second: Image.Image, box: Box, reach: int) -> tuple[int, int]:
    """How far the content of `box` in `first` moved in `second` (at half resolution, so the
    answer is in steps of 2 pixels)."""
    first = first.reduce(2)
    second = second.reduce(2)
    left, top, right, bottom = (value // 2 for value in box)
    patch = first.crop((left, top, right, bottom))
    best: tuple[float, int, int] | None = None
    for dy in range(-reach // 2, reach // 2 + 1):
        for dx in range(-reach // 2, reach // 2 + 1):
            moved = (left + dx, top + dy, right + dx, bottom + dy)
            if moved[0] < 0 or moved[1] < 0 or moved[2] > second.width or moved[3] > second.height:
                continue
            score = _mean_difference(patch, second.crop(moved))
            if best is None or score < best[0]:
                best = (score, dx, dy)
    assert best is not None
    return best[1] * 2, best[2] * 2


def _texture(size: tuple[int, int], seed: int) -> Image.Image:
    """Deterministic grey blobs a few pixels across: easy to track, hard to confuse."""
    small = (size[0] // 6 + 1, size[1] // 6 + 1)
    noise = Image.frombytes("L", small, random.Random(seed).randbytes(small[0] * small[1]))
    return noise.resize((small[0] * 6, small[1] * 6), Image.BICUBIC).crop((0, 0, *size))


class _TestCards(LocalVisuals):
    """Card layers with high-contrast content in known places: a textured background, an
    opaque textured motif block low in the middle and a textured text block at the top."""

    def layers(self, plan, index, size, variant=0, bleed=(0, 0)) -> CardLayers:
        real = super().layers(plan, index, size, variant, bleed)
        full = (size[0] + 2 * bleed[0], size[1] + 2 * bleed[1])
        clear = Image.new("RGBA", full, (0, 0, 0, 0))
        motif = clear.copy()
        motif.paste(_texture((120, 120), 2).convert("RGBA"), (120 + bleed[0], 400 + bleed[1]))
        text = Image.new("RGBA", size, (0, 0, 0, 0))
        text.paste(_texture((120, 80), 3).convert("RGBA"), (200, 40))
        return CardLayers(
            size=size,
            bleed=bleed,
            palette=PALETTES[0],
            seed=real.seed,
            ring_centre=(330.0, 600.0),
            ring_radius=10.0,
            background=_texture(full, 1).convert("RGB"),
            light=clear,
            motif=motif,
            vignette=Image.new("RGBA", size, (0, 0, 0, 0)),
            shadow=Image.new("RGBA", size, (0, 0, 0, 0)),
            text=text,
        )


def test_clip_has_the_requested_size_fps_and_duration(tmp_path: Path, plan) -> None:
    clip = tmp_path / "clip.mp4"
    LocalAnimation(LocalVisuals()).animate(tmp_path / "unused.png", plan, 1, 2.3, SIZE, 25, clip)
    info = probe(clip)
    assert (info.width, info.height, info.fps) == (*SIZE, 25.0)
    assert info.video_codec == "h264" and info.audio_codec is None
    assert info.duration == pytest.approx(2.3, abs=1 / 25)
    assert not list(tmp_path.glob("*.partial*")), "no partial file is left behind"


def test_card_layers_move_at_different_speeds(tmp_path: Path, plan) -> None:
    """Parallax, not a zoom or a pan: between the first and the last frame the background
    moves, the motif moves about twice as far the same way, and the text stays put."""
    clip = tmp_path / "clip.mp4"
    LocalAnimation(_TestCards()).animate(tmp_path / "unused.png", plan, 0, SECONDS, SIZE, FPS, clip)
    first, last = _frame(clip, 0), _frame(clip, round(SECONDS * FPS) - 1)
    background = _shift(first, last, (140, 240, 220, 320), reach=60)
    motif = _shift(first, last, (140, 420, 220, 500), reach=90)
    text = _shift(first, last, (220, 50, 300, 110), reach=20)
    assert min(abs(background[0]), abs(background[1])) >= 16, background
    assert abs(motif[0] - background[0]) >= 16 and abs(motif[0]) > abs(background[0]), (
        motif,
        background,
    )
    assert motif[0] * background[0] > 0, "near and far layers move the same way"
    assert max(abs(text[0]), abs(text[1])) <= 4, text


def test_real_cards_change_substantially_over_the_clip(tmp_path: Path, plan) -> None:
    clip = tmp_path / "clip.mp4"
    LocalAnimation(LocalVisuals(show_words=False)).animate(
        tmp_path / "unused.png", plan, 2, SECONDS, SIZE, FPS, clip
    )
    first, middle = _frame(clip, 0), _frame(clip, 24)
    changed = ImageChops.difference(first, middle).point(lambda value: 255 if value > 6 else 0)
    share = ImageStat.Stat(changed).mean[0] / 255
    assert share > 0.25, f"only {share:.0%} of the frame changed"


def test_foreign_still_pans_under_layers_of_its_own(tmp_path: Path, plan) -> None:
    """A still from another provider pans; light and specks move over it on their own, so even
    a flat grey still (whose pan cannot be seen) changes over much of the frame."""
    textured, flat = tmp_path / "textured.png", tmp_path / "flat.png"
    _texture((512, 912), 4).convert("RGB").save(textured)
    Image.new("RGB", (512, 912), (90, 90, 90)).save(flat)
    last = round(SECONDS * FPS) - 1
    for still in (textured, flat):
        LocalAnimation().animate(still, plan, 0, SECONDS, SIZE, FPS, still.with_suffix(".mp4"))
    dx, dy = _shift(
        *(_frame(textured.with_suffix(".mp4"), n) for n in (0, last)),
        (100, 200, 260, 440),
        reach=60,
    )
    assert max(abs(dx), abs(dy)) >= 10, "the still pans"
    first, final = (_frame(flat.with_suffix(".mp4"), n) for n in (0, last))
    changed = ImageChops.difference(first, final).point(lambda value: 255 if value > 4 else 0)
    share = ImageStat.Stat(changed).mean[0] / 255
    assert share > 0.2, f"only {share:.0%} of a flat still's frame changed"


def test_clips_are_deterministic_and_differ_per_scene_and_variant(tmp_path: Path, plan) -> None:
    animation = LocalAnimation(LocalVisuals())
    clips = {}
    for name, index, variant in (("a", 1, 0), ("b", 1, 0), ("scene", 2, 0), ("take", 1, 1)):
        clips[name] = tmp_path / f"{name}.mp4"
        animation.animate(
            tmp_path / "unused.png", plan, index, 1.0, SIZE, FPS, clips[name], variant=variant
        )
    assert clips["a"].read_bytes() == clips["b"].read_bytes()
    assert clips["a"].read_bytes() != clips["scene"].read_bytes()
    assert clips["a"].read_bytes() != clips["take"].read_bytes()


def test_cards_without_words_keep_only_the_counter(tmp_path: Path, plan) -> None:
    """With captions on, the card shows none of the script's words: its text layer holds only
    the small counter pill in the top-right corner, and the headline area is bare art."""
    worded = LocalVisuals(show_words=True).layers(plan, 0, SIZE)
    bare = LocalVisuals(show_words=False).layers(plan, 0, SIZE)
    assert bare.shadow.getchannel("A").getbbox() is None
    left, top, right, bottom = bare.text.getchannel("A").getbbox()
    assert left > SIZE[0] * 0.6 and bottom < SIZE[1] * 0.2, "only the counter pill"
    headline = worded.text.getchannel("A").getbbox()
    assert headline is not None and headline[0] < SIZE[0] * 0.2 and headline[3] > SIZE[1] * 0.3
    art = Image.alpha_composite(bare.background.convert("RGBA"), bare.light)
    for layer in (bare.motif, bare.vignette):
        art.alpha_composite(layer)
    region = (0, int(SIZE[1] * 0.25), SIZE[0], int(SIZE[1] * 0.7))
    LocalVisuals(show_words=False).draw(plan, 0, SIZE, tmp_path / "bare.png")
    LocalVisuals(show_words=True).draw(plan, 0, SIZE, tmp_path / "worded.png")
    with Image.open(tmp_path / "bare.png") as drawn:
        assert (
            ImageChops.difference(drawn.crop(region), art.convert("RGB").crop(region)).getbbox()
            is None
        )
    with Image.open(tmp_path / "worded.png") as drawn:
        assert ImageChops.difference(drawn.crop(region), art.convert("RGB").crop(region)).getbbox()


def test_layers_with_bleed_extend_the_same_card(plan) -> None:
    visuals = LocalVisuals()
    flat = visuals.layers(plan, 2, SIZE)
    bled = visuals.layers(plan, 2, SIZE, bleed=(40, 40))
    assert bled.background.size == bled.light.size == bled.motif.size == (440, 720)
    centre = bled.background.crop((40, 40, 40 + SIZE[0], 40 + SIZE[1]))
    difference = ImageStat.Stat(ImageChops.difference(centre, flat.background)).mean
    assert max(difference) < 2, "the frame's part of a larger background is the same gradient"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"seconds": 0.0}, "seconds"),
        ({"seconds": -1.0}, "seconds"),
        ({"index": 9}, "scene index"),
        ({"index": -1}, "scene index"),
        ({"fps": 0}, "fps"),
        ({"size": (361, 640)}, "size"),
    ],
)
def test_bad_input_is_refused(tmp_path: Path, plan, arguments, message) -> None:
    call = {"index": 0, "seconds": 1.0, "size": SIZE, "fps": FPS} | arguments
    with pytest.raises(ValueError, match=message):
        LocalAnimation(LocalVisuals()).animate(
            tmp_path / "unused.png",
            plan,
            call["index"],
            call["seconds"],
            call["size"],
            call["fps"],
            tmp_path / "clip.mp4",
        )
    assert not (tmp_path / "clip.mp4").exists()


def test_a_missing_foreign_still_is_refused(tmp_path: Path, plan) -> None:
    with pytest.raises(FileNotFoundError, match="still"):
        LocalAnimation().animate(
            tmp_path / "missing.png", plan, 0, 1.0, SIZE, FPS, tmp_path / "c.mp4"
        )
