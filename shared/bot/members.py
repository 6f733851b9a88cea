"""The router for my_chat_member: the user blocked the bot, or came back."""

from __future__ import annotations

import logging
from typing import Any

from shared import queue
from shared.bot.updates import NO_REPLY, Reply, dict_of, private_sender, record, record_only, str_of
from shared.config import Settings
from shared.db import Database

log = logging.getLogger(__name__)


def on_chat_member(
    db: Database, settings: Settings, update_id: int, member_update: dict[str, Any]
) -> Reply:
    """Kicked: cancel the user's jobs and block the chat. A member again: unblock it."""
    sender = private_sender(dict_of(member_update, "chat"), dict_of(member_update, "from"))
    status = str_of(dict_of(member_update, "new_chat_member"), "status")
    if sender is None or status not in ("kicked", "member"):
        return record_only(db, update_id, "my_chat_member")
    with db.transaction():
        if not record(db, update_id, "my_chat_member"):
            return NO_REPLY
        if status == "kicked":
            cancelled = queue.cancel_user_jobs(db, sender.user_id, "the user blocked the bot")
            queue.block_chat(db, sender.chat_id)
            log.info(
                "chat blocked update_id=%s chat=%s cancelled=%s",
                update_id,
                sender.chat_id,
                cancelled,
            )
        else:
            queue.unblock_chat(db, sender.chat_id)
            log.info("chat unblocked update_id=%s chat=%s", update_id, sender.chat_id)
    return NO_REPLY
