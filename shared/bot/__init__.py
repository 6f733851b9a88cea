"""The conversation: one Telegram update in, one recorded transaction, one reply out.

`handle_update` sends each kind of update to its router (messages, callbacks, members), as
aiogram's routers do. Every router records the update's id in `telegram_updates` in the same
transaction as every row it writes (through shared/queue.py, the one door to job state), so a
redelivered update changes nothing and gets no reply. It returns a `Reply`: the Bot API call to
put in the webhook response body (sendMessage or answerCallbackQuery) and, for a decisive button
press only, the edit that removes the buttons (a gate's, or the "send again" one), which the
webhook makes after the commit.

The handler is total over dicts that carry an int `update_id`; only database errors escape it.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from shared.bot.callbacks import on_callback
from shared.bot.members import on_chat_member
from shared.bot.messages import on_message
from shared.bot.updates import (
    NO_REPLY,
    MessageEdit,
    Reply,
    dict_of,
    perform_edit,
    record_only,
    update_id_of,
    update_kind,
)
from shared.config import Settings
from shared.db import Database

__all__ = [
    "NO_REPLY",
    "WEBHOOK_UPDATES",
    "MessageEdit",
    "Reply",
    "handle_update",
    "perform_edit",
    "update_id_of",
    "update_kind",
]

log = logging.getLogger(__name__)

Router = Callable[[Database, Settings, int, dict[str, Any]], Reply]

# One router per kind of update the bot acts on.
ROUTERS: dict[str, Router] = {
    "message": on_message,
    "callback_query": on_callback,
    "my_chat_member": on_chat_member,
}
# What setWebhook and getUpdates ask Telegram for: the kinds a router handles.
WEBHOOK_UPDATES: tuple[str, ...] = tuple(ROUTERS)


def handle_update(db: Database, settings: Settings, update: dict[str, Any]) -> Reply:
    """Act on one update (its update_id already validated by `update_id_of`)."""
    update_id = update["update_id"]
    kind = update_kind(update)
    router = ROUTERS.get(kind)
    payload = dict_of(update, kind)
    if router is None or payload is None:
        log.info("update ignored update_id=%s kind=%s", update_id, kind)
        return record_only(db, update_id, kind)
    return router(db, settings, update_id, payload)
