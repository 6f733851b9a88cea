"""Arbitrary bytes, arbitrary JSON and update-shaped nonsense thrown at the webhook: while the
database is up it never answers 5xx, a rejected request writes no row, and an accepted one
answers with a well-formed Bot API call or nothing."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.buttons import MAX_JOB_ID, callback_data
from shared.config import GATES
from shared.db import Database
from tests.support import (
    SECRET_HEADERS,
    count,
    park_at_gate,
    post,
    text_message,
)

INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=12,
)


def mostly(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Usually a well-typed value, sometimes any JSON at all: deep paths get reached too."""
    return st.integers(min_value=0, max_value=7).flatmap(lambda n: json_values if n == 7 else valid)


ids = mostly(st.integers(min_value=1, max_value=3) | INT64)
users = st.fixed_dictionaries(
    {"id": ids},
    optional={
        "is_bot": st.booleans() | json_values,
        "language_code": mostly(st.sampled_from(["ru", "en", "de", ""])),
    },
)
chats = st.fixed_dictionaries(
    {"id": ids}, optional={"type": mostly(st.sampled_from(["private", "group"]))}
)
texts = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        ["/start", "/help", "/status", "/cancel", "/start@Bot x", "/nope", "\x00", "\ud800"]
    ),
    json_values,
)
messages = st.fixed_dictionaries(
    {"chat": mostly(chats), "from": mostly(users), "message_id": ids, "text": texts},
    optional={
        "reply_to_message": mostly(st.fixed_dictionaries({"message_id": ids})),
        "photo": json_values,
    },
)
press_data = mostly(
    st.builds(
        callback_data,
        st.integers(min_value=1, max_value=3) | st.integers(min_value=1, max_value=MAX_JOB_ID),
        st.sampled_from(GATES),
        st.sampled_from(["approve", "regenerate", "cancel"]),
    ),
)
callbacks = st.fixed_dictionaries(
    {
        "id": mostly(st.text(max_size=10) | st.just("\ud800")),
        "from": mostly(users),
        "message": mostly(messages),
    },
    optional={"data": press_data},
)
members = st.fixed_dictionaries(
    {"chat": mostly(chats), "from": mostly(users)},
    optional={
        "new_chat_member": mostly(
            st.fixed_dictionaries({"status": st.sampled_from(["kicked", "member"])})
        )
    },
)
update_bodies = st.one_of(
    st.fixed_dictionaries({"message": mostly(messages)}),
    st.fixed_dictionaries({"callback_query": mostly(callbacks)}),
    st.fixed_dictionaries({"my_chat_member": mostly(members)}),
    st.dictionaries(st.text(max_size=15), json_values, max_size=2),
)
FRESH_UPDATE_IDS = itertools.count(1)
FUZZ = settings(
    max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def rows(db: Database) -> tuple[int, ...]:
    return tuple(
        count(db, table)
        for table in ("telegram_updates", "jobs", "approval_statuses", "job_revisions")
    )


def check(client: FlaskClient, db: Database, body: bytes) -> None:
    before = rows(db)
    response = client.post("/", data=body, headers=SECRET_HEADERS, content_type="application/json")
    response.close()
    assert response.status_code < 500, response.get_data(as_text=True)
    assert response.content_type == "application/json"
    if response.status_code != 200:
        assert rows(db) == before
        return
    reply: dict[str, Any] = response.get_json()
    if reply:
        assert reply["method"] in ("sendMessage", "answerCallbackQuery")
        assert isinstance(reply["text"], str) and 0 < len(reply["text"]) <= 4096


@pytest.fixture
def open_gates(client: FlaskClient, db: Database) -> None:
    """Jobs 1 and 2 of users 1 and 2, waiting at the script gate on message 1: presses can land."""
    for user_id in (1, 2):
        post(client, text_message("A fox in the snow", 90000 + user_id, user_id=user_id))
        park_at_gate(db, "script", message_id=1)


@FUZZ
@given(update_bodies)
def test_update_shaped_json_never_fails(
    client: FlaskClient, db: Database, open_gates: None, body: dict[str, Any]
) -> None:
    update = {"update_id": next(FRESH_UPDATE_IDS), **body}  # a repeated id would only test dedup
    check(client, db, json.dumps(update).encode())


@FUZZ
@given(json_values)
def test_arbitrary_json_never_fails(client: FlaskClient, db: Database, value: Any) -> None:
    check(client, db, json.dumps(value).encode())


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_fail(client: FlaskClient, db: Database, body: bytes) -> None:
    check(client, db, body)
