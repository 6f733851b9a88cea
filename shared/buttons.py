"""The inline buttons of an approval gate and of a delivery, and the callback_data they carry.

A gate button's callback_data is `g:<job_id>:<gate>:<action>`, with action `a` (approve), `r`
(regenerate) or `c` (cancel): at most 2 + 19 + 1 + 10 + 2 = 34 bytes, well under Telegram's 64.
A button sent before a gate was renamed carries its old name (`storyboard`), read as the new one
(GATE_ALIASES). The "send again" button under a video whose delivery is unknown carries
`d:<job_id>:s`. The data comes back from the user's client, so `parse_callback_data` trusts none
of it: anything that is not exactly one of these shapes yields None, and the webhook still
checks that the presser owns the job.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from shared.config import GATE_ALIASES, GATES
from shared.texts import t

MAX_JOB_ID = 2**63 - 1
ACTIONS = {"a": "approve", "r": "regenerate", "c": "cancel"}
_CODES = {action: code for code, action in ACTIONS.items()}
_CALLBACK_RE = re.compile(
    r"g:([1-9][0-9]{0,18}):(" + "|".join((*GATES, *GATE_ALIASES)) + r"):([arc])"
)
_RESEND_RE = re.compile(r"d:([1-9][0-9]{0,18}):s")


@dataclass(frozen=True)
class GatePress:
    """A press of one gate button: which job, which gate, which action."""

    job_id: int
    gate: str
    action: str


@dataclass(frozen=True)
class ResendPress:
    """A press of "send again" under the notice that a job's video may not have arrived."""

    job_id: int


def callback_data(job_id: int, gate: str, action: str) -> str:
    """The callback_data of the `action` button for `gate` of job `job_id`."""
    if not 1 <= job_id <= MAX_JOB_ID or gate not in GATES or action not in _CODES:
        raise ValueError(f"no button for job={job_id} gate={gate!r} action={action!r}")
    return f"g:{job_id}:{gate}:{_CODES[action]}"


def resend_callback_data(job_id: int) -> str:
    """The callback_data of the "send again" button of job `job_id`."""
    if not 1 <= job_id <= MAX_JOB_ID:
        raise ValueError(f"no button for job={job_id}")
    return f"d:{job_id}:s"


def parse_callback_data(data: object) -> GatePress | ResendPress | None:
    """The press `data` encodes, or None for anything malformed, forged or out of range."""
    if not isinstance(data, str):
        return None
    resend = _RESEND_RE.fullmatch(data)
    if resend is not None:
        job_id = int(resend.group(1))
        return ResendPress(job_id=job_id) if job_id <= MAX_JOB_ID else None
    match = _CALLBACK_RE.fullmatch(data)
    if match is None:
        return None
    job_id = int(match.group(1))
    if job_id > MAX_JOB_ID:
        return None
    gate = GATE_ALIASES.get(match.group(2), match.group(2))
    return GatePress(job_id=job_id, gate=gate, action=ACTIONS[match.group(3)])


def gate_keyboard(job_id: int, gate: str, language: str) -> dict[str, Any]:
    """reply_markup with ✅ Approve / 🔁 Regenerate / ❌ Cancel for `gate` of the job."""
    return {
        "inline_keyboard": [
            [
                {
                    "text": t(f"button_{action}", language),
                    "callback_data": callback_data(job_id, gate, action),
                }
                for action in ("approve", "regenerate", "cancel")
            ]
        ]
    }


def resend_keyboard(job_id: int, language: str) -> dict[str, Any]:
    """reply_markup with the one "send again" button of the job's video."""
    return {
        "inline_keyboard": [
            [{"text": t("button_resend", language), "callback_data": resend_callback_data(job_id)}]
        ]
    }
