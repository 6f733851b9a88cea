"""What a job costs: the price table, the estimate of a provider call, and the meter a job's steps
call around each provider call (`JobContext.meter`).

A step asks `meter.check(kind, units)` with what the call is expected to consume before making
it, and `meter.record(kind, units)` with what it did consume after. `check` refuses a call that
would take the job past JOB_COST_LIMIT_USD, or the bot's spending of the UTC day past
DAILY_COST_LIMIT_USD, by raising `CostLimitReached`: the job fails before anything more is spent.
Prices are estimates from list prices (DEFAULT_PRICES, PRICES_DATE), which the owner overrides
with PRICES_FILE; local providers cost nothing.
"""

from __future__ import annotations

import json
import logging
import math
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from shared import queue
from shared.config import ConfigError, Settings
from shared.errors import PermanentError

if TYPE_CHECKING:
    from shared.db import Database

log = logging.getLogger(__name__)

Units = Mapping[str, float]
Prices = dict[str, dict[str, float]]

PRICES_DATE = "2025-06"
"""When DEFAULT_PRICES were taken from OpenAI's public price list (platform.openai.com/docs/pricing)."""

DEFAULT_PRICES: Prices = {
    "gpt-4o-mini": {"usd_per_1m_input_tokens": 0.15, "usd_per_1m_output_tokens": 0.60},
    # OpenAI's own estimate for gpt-4o-mini-tts ($0.60/1M text tokens, $12/1M audio tokens).
    "gpt-4o-mini-tts": {"usd_per_minute": 0.015},
    # Medium quality at 1024x1536 or 1536x1024 (1024x1024 is $0.042, high quality $0.25).
    "gpt-image-1": {"usd_per_image": 0.063},
    "gpt-4o-mini-transcribe": {"usd_per_minute": 0.003},
    # Seconds of video asked for, from the providers' list prices as of ANIMATION_PRICES_DATE:
    # Runway bills gen4_turbo 5 credits a second at $0.01 a credit; fal bills Kling 2.1 standard
    # $0.25 for 5 s and MiniMax Hailuo-02 standard about $0.045 a second (768p).
    "gen4_turbo": {"usd_per_video_second": 0.05},
    # gen4_image: 8 credits an image at 1080p (5 at 720p).
    "gen4_image": {"usd_per_image": 0.08},
    "fal-ai/kling-video/v2.1/standard/image-to-video": {"usd_per_video_second": 0.05},
    "fal-ai/minimax/hailuo-02/standard/image-to-video": {"usd_per_video_second": 0.045},
}
"""USD per unit of each model, by the name of the field (see RATES)."""

ANIMATION_PRICES_DATE = "2025-07"
"""When the image-to-video prices in DEFAULT_PRICES were taken (runwayml.com API pricing,
fal.ai model pages)."""

RATES: dict[str, tuple[str, float]] = {
    "input_tokens": ("usd_per_1m_input_tokens", 1_000_000),
    "output_tokens": ("usd_per_1m_output_tokens", 1_000_000),
    "characters": ("usd_per_1m_characters", 1_000_000),
    "audio_seconds": ("usd_per_minute", 60),
    "images": ("usd_per_image", 1),
    "video_seconds": ("usd_per_video_second", 1),
}
"""A unit a call consumes -> (the price field that prices it, how many units that price is for)."""

SPEECH_CHARS_PER_SECOND = 14.0
"""How fast narration is spoken: the script is sized by it, and speech is estimated by it."""
SCRIPT_TOKENS = 1500
"""A scene plan's prompt (instructions and schema) and answer, each, in tokens, roughly."""


class CostLimitReached(PermanentError):
    """The next provider call would take the job (`scope` 'job') or the bot's day ('day') past
    the owner's limit; the job fails with `notice` (a text key) and spends nothing more."""

    def __init__(self, scope: str, spent: float, call: float, limit: float) -> None:
        super().__init__(
            f"cost limit of the {scope} reached: spent ${spent:.4f}, the next call "
            f"${call:.4f}, the limit ${limit:.4f}"
        )
        self.notice = "cost_limit_job" if scope == "job" else "cost_limit_day"


def load_prices(path: Path | None) -> Prices:
    """DEFAULT_PRICES with the models of the JSON file at `path` replacing theirs (a model given
    as {} is free). ConfigError for a file that cannot be read or has the wrong shape."""
    prices = {model: dict(fields) for model, fields in DEFAULT_PRICES.items()}
    if path is None:
        return prices
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"PRICES_FILE {path} cannot be read as JSON: {exc}") from None
    fields = {field for field, _ in RATES.values()}
    if not isinstance(data, dict):
        raise ConfigError(f"PRICES_FILE {path}: expected {{model: {{field: usd}}}}")
    for model, given in data.items():
        valid = isinstance(given, dict) and all(
            name in fields and isinstance(usd, (int, float)) and usd >= 0
            for name, usd in given.items()
        )
        if not valid:
            raise ConfigError(
                f"PRICES_FILE {path}: model {model!r} needs non-negative numbers for "
                f"{', '.join(sorted(fields))}"
            )
        prices[model] = {name: float(usd) for name, usd in given.items()}
    return prices


def chosen(settings: Settings, kind: str) -> tuple[str, str]:
    """(provider, model) that makes calls of `kind` (script, voice, visuals, transcribe,
    animation); ("local", "local") for a provider that runs on this machine for free."""
    provider, models = {
        "script": (settings.script_provider, {"openai": settings.openai_script_model}),
        "voice": (settings.voice_provider, {"openai": settings.openai_tts_model}),
        "visuals": (
            settings.visuals_provider,
            {"openai": settings.openai_image_model, "runway": settings.runway_image_model},
        ),
        "transcribe": (settings.transcribe_provider, {"openai": settings.openai_transcribe_model}),
        "animation": (
            settings.animation_provider,
            {"runway": settings.runway_video_model, "fal": settings.fal_video_model},
        ),
    }[kind]
    return (provider, models[provider]) if provider in models else ("local", "local")


def providers_key(settings: Settings) -> str:
    """The providers a job runs with, e.g. 'local/openai/local': what the estimate compares."""
    kinds = ("script", "voice", "visuals", "animation")
    return "/".join(chosen(settings, kind)[0] for kind in kinds)


def estimate(kind: str, model: str, units: Units, prices: Prices) -> float:
    """The price in USD of a call of `kind` to `model` that consumes `units`. A local provider
    is free; a model missing from the table is priced as the default model of its kind."""
    if model == "local":
        return 0.0
    table = prices.get(model)
    if table is None:
        fallback = _DEFAULT_MODELS[kind]
        log.warning("no price for model=%s kind=%s priced_as=%s", model, kind, fallback)
        table = prices.get(fallback, {})
    return sum(
        units.get(unit, 0.0) / per * table.get(field, 0.0) for unit, (field, per) in RATES.items()
    )


_DEFAULT_MODELS = {
    "script": "gpt-4o-mini",
    "voice": "gpt-4o-mini-tts",
    "visuals": "gpt-image-1",
    "transcribe": "gpt-4o-mini-transcribe",
    "animation": "gen4_turbo",
}


def script_units(description: str) -> dict[str, float]:
    """What writing a scene plan for `description` is expected to consume."""
    return {
        "input_tokens": SCRIPT_TOKENS + math.ceil(len(description) / 2),
        "output_tokens": SCRIPT_TOKENS,
    }


def speech_units(text: str, seconds: float | None = None) -> dict[str, float]:
    """Speaking `text`: its characters and seconds of audio (estimated when not known yet)."""
    return {
        "characters": len(text),
        "audio_seconds": seconds if seconds is not None else len(text) / SPEECH_CHARS_PER_SECOND,
    }


class Meter:
    """Prices, limits and records the provider calls of one claimed job."""

    def __init__(self, settings: Settings, db: "Database", job: queue.ClaimedJob) -> None:
        self._settings = settings
        self._db = db
        self._job = job

    @cached_property
    def _prices(self) -> Prices:
        """Read when first needed, so that a broken PRICES_FILE fails a step (and says so in
        the job's last error) rather than the worker's tick."""
        return load_prices(self._settings.prices_file)

    def price(self, kind: str, units: Units) -> float:
        return estimate(kind, chosen(self._settings, kind)[1], units, self._prices)

    def check(self, kind: str, units: Units) -> None:
        """Raise `CostLimitReached` when a call consuming `units` would pass a limit."""
        call = self.price(kind, units)
        if call <= 0:
            return
        job_limit = self._settings.job_cost_limit_usd
        if job_limit is not None:
            _guard("job", queue.job_cost(self._db, self._job.id), call, job_limit, self._job.id)
        day_limit = self._settings.daily_cost_limit_usd
        if day_limit is not None:
            _guard("day", queue.cost_today(self._db), call, day_limit, self._job.id)

    def record(self, kind: str, units: Units) -> float:
        """Record a call that consumed `units`; return its price."""
        provider, model = chosen(self._settings, kind)
        usd = estimate(kind, model, units, self._prices)
        queue.record_provider_call(self._db, self._job, kind, provider, model, dict(units), usd)
        log.info(
            "provider call job=%s step=%s kind=%s model=%s usd=%.6f units=%s",
            self._job.id,
            self._job.step,
            kind,
            model,
            usd,
            json.dumps(dict(units)),
        )
        return usd


def _guard(scope: str, spent: float, call: float, limit: float, job_id: int) -> None:
    if spent + call > limit:
        log.warning(
            "cost limit reached job=%s scope=%s spent=%.6f call=%.6f limit=%.6f",
            job_id,
            scope,
            spent,
            call,
            limit,
        )
        raise CostLimitReached(scope, spent, call, limit)


def format_usd(usd: float) -> str:
    """'$0', '$0.0042', '$1.25': cents when there are any, four decimals below a cent."""
    if usd <= 0:
        return "$0"
    return f"${usd:.2f}" if usd >= 0.01 else f"${usd:.4f}"
