"""plan_from_text, parse_edited_script and shorten: properties over any text, and worked examples."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.plan import (
    MAX_SCENES,
    MIN_SCENES,
    ScenePlan,
    parse_edited_script,
    plan_from_text,
    shorten,
)

CYRILLIC_WORDS = st.text(
    alphabet="абвгдеёжзийклмнопрстуфхцчшщъыьэюяАБВГДЕЁЖ", min_size=1, max_size=14
)
LATIN_WORDS = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEF0123456789", min_size=1, max_size=12
)
SEPARATORS = st.sampled_from(
    [" ", " ", " ", ", ", ". ", "! ", "? ", "\n", " — ", "; ", "… ", "1. ", "\n2) "]
)


@st.composite
def prose(draw: st.DrawFn) -> str:
    """Text built from words and punctuation, in Russian or English."""
    words = draw(st.lists(st.one_of(CYRILLIC_WORDS, LATIN_WORDS), min_size=1, max_size=160))
    pieces = []
    for word in words:
        pieces.append(word)
        pieces.append(draw(SEPARATORS))
    return "".join(pieces)


ANY_TEXT = st.one_of(prose(), st.text(min_size=1, max_size=400)).filter(lambda t: t.strip())
LANGUAGES = st.sampled_from(["ru", "en"])
SECONDS = st.integers(min_value=5, max_value=180)


def assert_valid_plan(plan: ScenePlan, seconds: int) -> None:
    assert MIN_SCENES <= len(plan.scenes) <= MAX_SCENES
    total = sum(scene.duration for scene in plan.scenes)
    assert abs(total - seconds) <= 0.1 * seconds
    assert 0 < len(plan.title) <= 60
    for scene in plan.scenes:
        assert scene.narration.strip()
        assert scene.on_screen_text.strip()
        assert len(scene.on_screen_text.split()) <= 6
        assert scene.visual_prompt.strip()
        assert scene.duration > 0
    assert ScenePlan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan


@settings(max_examples=150, deadline=None)
@given(text=ANY_TEXT, language=LANGUAGES, seconds=SECONDS)
def test_plan_from_any_text_is_valid_and_deterministic(
    text: str, language: str, seconds: int
) -> None:
    plan = plan_from_text(text, language, seconds)
    assert_valid_plan(plan, seconds)
    assert plan_from_text(text, language, seconds) == plan


@settings(max_examples=150, deadline=None)
@given(text=ANY_TEXT, language=LANGUAGES, seconds=SECONDS)
def test_edited_script_from_any_text_is_valid_and_deterministic(
    text: str, language: str, seconds: int
) -> None:
    plan = parse_edited_script(text, language, seconds)
    assert_valid_plan(plan, seconds)
    assert parse_edited_script(text, language, seconds) == plan


@pytest.mark.parametrize("blank", ["", "   ", "\n\t \n"])
def test_blank_text_is_rejected(blank: str) -> None:
    with pytest.raises(ValueError, match="empty"):
        plan_from_text(blank, "ru", 30)
    with pytest.raises(ValueError, match="empty"):
        parse_edited_script(blank, "ru", 30)


def test_sentences_become_scenes_with_proportional_durations() -> None:
    text = (
        "История Москвы. Город основан в 1147 году Юрием Долгоруким. "
        "Сегодня это огромный мегаполис с метро, парками, театрами и музеями! "
        "Приезжайте посмотреть сами?"
    )
    plan = plan_from_text(text, "ru", 30)
    assert [s.narration for s in plan.scenes] == [
        "История Москвы.",
        "Город основан в 1147 году Юрием Долгоруким.",
        "Сегодня это огромный мегаполис с метро, парками, театрами и музеями!",
        "Приезжайте посмотреть сами?",
    ]
    assert plan.title == "История Москвы"
    durations = [s.duration for s in plan.scenes]
    assert durations[2] == max(durations)
    assert plan.scenes[1].on_screen_text == "Город основан в 1147 году Юрием…"
    assert "Город основан в 1147 году" in plan.scenes[1].visual_prompt


def test_one_short_sentence_gets_intro_and_closing_around_it() -> None:
    plan = plan_from_text("Кот катается на велосипеде", "ru", 30)
    narrations = [s.narration for s in plan.scenes]
    assert len(narrations) == 3
    assert narrations[1] == "Кот катается на велосипеде"
    assert "Кот катается на велосипеде" in narrations[0]
    assert "Спасибо за просмотр" in narrations[2]
    english = plan_from_text("A cat on a bike", "en", 30)
    assert "Thanks for watching" in english.scenes[2].narration


def test_long_sentence_is_split_at_clause_breaks() -> None:
    text = (
        "A short film about the ocean: waves and whales, the people who study them, "
        "and the ships that carry them from the tropics to the poles"
    )
    plan = plan_from_text(text, "en", 20)
    assert len(plan.scenes) >= 3
    assert " ".join(s.narration for s in plan.scenes) == text


def test_many_sentences_are_merged_into_eight_scenes() -> None:
    text = " ".join(f"Sentence number {n} is here." for n in range(20))
    plan = plan_from_text(text, "en", 60)
    assert len(plan.scenes) == MAX_SCENES
    assert " ".join(s.narration for s in plan.scenes) == text


def test_given_title_is_kept() -> None:
    assert plan_from_text("Один. Два. Три.", "ru", 15, title="Счёт").title == "Счёт"


def test_numbered_script_keeps_title_and_each_scene() -> None:
    script = (
        "Мой фильм про кота\n"
        "1. Кот просыпается на рассвете.\n"
        "2) Он идёт на кухню,\n"
        "   где его ждёт миска молока.\n"
        "Сцена 3: Кот засыпает на солнце.\n"
    )
    plan = parse_edited_script(script, "ru", 20)
    assert plan.title == "Мой фильм про кота"
    assert [s.narration for s in plan.scenes] == [
        "Кот просыпается на рассвете.",
        "Он идёт на кухню, где его ждёт миска молока.",
        "Кот засыпает на солнце.",
    ]


def test_numbered_english_script_without_title() -> None:
    script = "Scene 1 - Dawn over the city.\nScene 2: Traffic wakes up.\n3. Night falls again."
    plan = parse_edited_script(script, "en", 15)
    assert [s.narration for s in plan.scenes] == [
        "Dawn over the city.",
        "Traffic wakes up.",
        "Night falls again.",
    ]
    assert plan.title == "Dawn over the city"


def test_numbered_script_with_too_many_scenes_is_merged() -> None:
    script = "\n".join(f"{n}. Сцена номер {n}." for n in range(1, 12))
    plan = parse_edited_script(script, "ru", 30)
    assert len(plan.scenes) == MAX_SCENES
    assert "Сцена номер 11." in plan.scenes[-1].narration


def test_unnumbered_edit_falls_back_to_plain_text() -> None:
    text = "Первое предложение. Второе предложение. Третье предложение."
    assert parse_edited_script(text, "ru", 30) == plan_from_text(text, "ru", 30)


def test_shorten_examples() -> None:
    assert shorten("abcdefghijk", 5) == "abcd…"
    assert shorten("abcde", 5) == "abcde"
    assert shorten("ab  cdefgh", 5) == "ab…"
    assert shorten("abc", 0) == "…"
    assert shorten("🎬🎬🎬🎬", 6, measure=lambda text: 2 * len(text)) == "🎬🎬…"


@given(text=st.text(max_size=200), limit=st.integers(min_value=1, max_value=120))
def test_shorten_keeps_the_longest_prefix_that_fits(text: str, limit: int) -> None:
    short = shorten(text, limit)
    assert len(short) <= limit
    expected = text if len(text) <= limit else text[: limit - 1].rstrip() + "…"
    assert short == expected


@pytest.mark.parametrize(
    ("given_mood", "kept"), [("Calm", "calm"), ("epic", "epic"), ("jazzy", None)]
)
def test_a_suggested_mood_survives_the_round_trip_and_an_unknown_one_is_dropped(
    given_mood: str, kept: str | None
) -> None:
    scenes = [{"narration": "Раз.", "on_screen_text": "", "visual_prompt": "", "duration": 2}] * 3
    plan = ScenePlan.from_dict(
        {"title": "T", "language": "ru", "mood": given_mood, "scenes": scenes}
    )
    assert plan.mood == kept
    assert ScenePlan.from_dict(plan.to_dict()) == plan
