"""Run one claimed job: resolve the gate it woke from, then its steps until it finishes, parks
at a gate, or fails. Every outcome is written through the fenced queue statements; the user is
told about the ones they must know of, in words, never with a stack trace."""

from __future__ import annotations

import logging

from shared import queue
from shared.costs import CostLimitReached, providers_key
from shared.errors import OwnerActionNeeded, PermanentError, TransientError
from shared.pipeline.job import CancelRequested, Heartbeat, JobContext
from shared.pipeline.steps import TABLE
from shared.pipeline.table import Next
from shared.telegram import ChatBlocked
from shared.texts import failure_notice, t

log = logging.getLogger(__name__)


def run_job(ctx: JobContext) -> None:
    job = ctx.job
    log.info(
        "job claimed job=%s step=%s attempt=%s chat=%s", job.id, job.step, job.attempts, job.chat_id
    )
    try:
        if job.cancel_requested:
            at_gate = job.gate_decision == "cancelled"
            raise CancelRequested(
                f"cancelled at the {job.prev_gate} gate" if at_gate else "cancel requested"
            )
        if job.attempts > job.max_attempts:
            raise PermanentError(
                f"gave up after {job.max_attempts} attempts (the worker kept dying)"
            )
        if job.woke_from_gate and not _resolve_gate(ctx):
            return
        with Heartbeat(ctx.settings, job) as heartbeat:
            ctx.heartbeat = heartbeat
            outcome = Next.CONTINUE
            while outcome is Next.CONTINUE:
                outcome = _run_step(ctx)
        log.info("job stopped job=%s step=%s outcome=%s", job.id, job.step, outcome.value)
    except queue.LeaseLost:
        log.warning("job abandoned: lease lost job=%s step=%s", job.id, job.step)
    except CancelRequested as exc:
        _cancel(ctx, str(exc), "job_cancelled")
    except ChatBlocked:
        cancelled = queue.cancel_user_jobs(ctx.db, job.user_id, "the user blocked the bot")
        queue.block_chat(ctx.db, job.chat_id)
        log.info("user blocked the bot job=%s chat=%s cancelled=%s", job.id, job.chat_id, cancelled)
    except TransientError as exc:
        _fail(ctx, exc, permanent=False, retry_after=exc.retry_after or 0.0)
    except PermanentError as exc:
        _fail(ctx, exc, permanent=True)
    except Exception as exc:  # a bug or an unforeseen error: retry with backoff, then give up
        log.exception("job step crashed job=%s step=%s", job.id, job.step)
        _fail(ctx, exc, permanent=False)


def _run_step(ctx: JobContext) -> Next:
    """Run the job's step, recording when it started and ended (sql/008_costs.sql): a run that
    parks at a gate ends as 'gate', so the time the user takes to decide is told apart."""
    step = TABLE[ctx.job.step]
    run_id = queue.begin_step_run(ctx.db, ctx.job, providers_key(ctx.settings))
    outcome = "stopped"
    try:
        result = step.run(ctx)
        parked_at_gate = result is Next.PARKED and step.opens is not None
        outcome = "gate" if parked_at_gate else result.value
        return result
    finally:
        queue.end_step_run(ctx.db, run_id, outcome)


def _resolve_gate(ctx: JobContext) -> bool:
    """Act on what woke the job at its gate; True when the job goes on running now."""
    job = ctx.job
    gate = job.prev_gate
    if job.gate_decision == "approved":
        log.info("gate approved job=%s gate=%s", job.id, gate)
        # The regenerate count stays: the stills and clips made for it are the approved ones.
        count = (job.checkpoints.get(TABLE.review_of(gate)) or {}).get("count", 0)
        ctx.checkpoint({"approved": True, "count": count}, TABLE.step_after_gate(gate))
        return True
    revision = queue.pending_revision(ctx.db, job.id, gate)
    if revision is not None:
        queue.consume_revision(ctx.db, job, revision["id"])
        count = (job.checkpoints.get(TABLE.review_of(gate)) or {}).get("count", 0) + 1
        log.info(
            "gate revision job=%s gate=%s kind=%s count=%s", job.id, gate, revision["kind"], count
        )
        ctx.checkpoint(
            {"kind": revision["kind"], "text": revision["text"], "count": count},
            TABLE.redo_of(gate),
        )
        return True
    if job.gate_expired:
        _cancel(ctx, f"approval expired at the {gate} gate", "approval_expired")
        return False
    log.warning("gate woke with nothing to act on job=%s gate=%s; parking again", job.id, gate)
    queue.open_gate(ctx.db, job, gate, job.gate_message_id, ctx.settings.approval_ttl_hours * 3600)
    return False


def _notify(ctx: JobContext, text: str) -> None:
    """Tell the user, unless they blocked the bot; a failed notice is logged, not retried."""
    job = ctx.job
    if queue.chat_is_blocked(ctx.db, job.chat_id):
        return
    try:
        ctx.telegram.send_message(job.chat_id, text)
    except Exception:
        log.warning("notice not delivered job=%s chat=%s", job.id, job.chat_id, exc_info=True)


def _cancel(ctx: JobContext, reason: str, notice: str) -> None:
    if queue.cancel(ctx.db, ctx.job.id, reason, token=ctx.job.lease_token):
        log.info("job cancelled job=%s reason=%s", ctx.job.id, reason)
        _notify(ctx, t(notice, ctx.language, job_id=ctx.job.id))


def _fail(
    ctx: JobContext, exc: BaseException, *, permanent: bool, retry_after: float = 0.0
) -> None:
    job = ctx.job
    error = f"{job.step}: {exc.__class__.__name__}: {exc}"
    try:
        state = queue.fail(
            ctx.db,
            job,
            error,
            permanent=permanent,
            retry_after=retry_after,
            base_delay=ctx.settings.retry_base_seconds,
            max_delay=ctx.settings.retry_max_seconds,
        )
    except queue.LeaseLost:
        return
    log.warning("job step failed job=%s step=%s state=%s error=%s", job.id, job.step, state, error)
    if state == "failed" and isinstance(exc, CostLimitReached):
        _notify(ctx, t(exc.notice, ctx.language, job_id=job.id))
    elif state == "failed" and isinstance(exc, OwnerActionNeeded):
        _notify(ctx, t("bot_unavailable", ctx.language, job_id=job.id))
    elif state == "failed":
        _notify(ctx, failure_notice(TABLE.failure_name(job.step), ctx.language))
