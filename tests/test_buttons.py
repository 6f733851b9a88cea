"""The gate buttons: their texts, and callback_data that survives the round trip or is refused."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.buttons import (
    ACTIONS,
    MAX_JOB_ID,
    GatePress,
    callback_data,
    gate_keyboard,
    parse_callback_data,
)
from shared.config import GATES

job_ids = st.integers(min_value=1, max_value=MAX_JOB_ID)
gates = st.sampled_from(GATES)
actions = st.sampled_from(sorted(ACTIONS.values()))


@given(job_ids, gates, actions)
def test_callback_data_round_trips_within_64_bytes(job_id: int, gate: str, action: str) -> None:
    data = callback_data(job_id, gate, action)
    assert 1 <= len(data.encode()) <= 64
    assert parse_callback_data(data) == GatePress(job_id, gate, action)


@given(st.one_of(st.text(), st.binary(), st.integers(), st.none(), st.lists(st.text())))
def test_arbitrary_data_never_raises(data: object) -> None:
    press = parse_callback_data(data)
    assert press is None or callback_data(press.job_id, press.gate, press.action) == data


@given(job_ids, gates, actions, st.text(min_size=1, max_size=3))
def test_anything_appended_or_prepended_is_refused(
    job_id: int, gate: str, action: str, extra: str
) -> None:
    data = callback_data(job_id, gate, action)
    assert parse_callback_data(data + extra) is None
    assert parse_callback_data(extra + data) is None


@pytest.mark.parametrize(
    "data",
    [
        "",
        "g:0:script:a",
        "g:01:script:a",
        "g:-5:script:a",
        f"g:{MAX_JOB_ID + 1}:script:a",
        "g:12:Script:a",
        "g:12:video:a",
        "g:12:script:x",
        "g:12:script:a\n",
        "g:١٢:script:a",
        "Data from button callback",
    ],
)
def test_malformed_data_is_refused(data: str) -> None:
    assert parse_callback_data(data) is None


@pytest.mark.parametrize(
    ("language", "texts"),
    [
        ("en", ["✅ Approve", "🔁 Regenerate", "❌ Cancel"]),
        ("ru", ["✅ Одобрить", "🔁 Заново", "❌ Отмена"]),
    ],
)
def test_gate_keyboard_has_three_buttons_for_the_job(language: str, texts: list[str]) -> None:
    keyboard = gate_keyboard(42, "images", language)
    buttons = [button for row in keyboard["inline_keyboard"] for button in row]
    assert [button["text"] for button in buttons] == texts
    assert [parse_callback_data(button["callback_data"]) for button in buttons] == [
        GatePress(42, "images", action) for action in ("approve", "regenerate", "cancel")
    ]


def test_no_button_for_an_impossible_press() -> None:
    with pytest.raises(ValueError):
        callback_data(0, "script", "approve")
    with pytest.raises(ValueError):
        callback_data(1, "video", "approve")
