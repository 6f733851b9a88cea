"""Every setting of the bot, read from the environment in one place.

`load_settings()` returns one frozen `Settings`; nothing else in the code reads `os.environ`
for configuration. A bad value raises `ConfigError` naming the variable, never echoing secrets.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from shared.errors import ConfigurationError

REPO_ROOT = Path(__file__).resolve().parents[1]
GATES = ("script", "images", "videos")
GATE_ALIASES = {"storyboard": "images"}
"""Old gate names still honoured: in APPROVAL_GATES, in buttons already sent, in decision rows."""
VIDEO_FORMATS = {"9:16": (720, 1280), "16:9": (1280, 720), "1:1": (720, 720)}
"""Frame sizes at VIDEO_RESOLUTION 720 (the short side); 1080 scales them by 1.5."""
VIDEO_RESOLUTIONS = ("720", "1080")
PROVIDER_NAMES = ("local", "openai")
VISUALS_PROVIDERS = ("local", "openai", "runway")
ANIMATION_PROVIDERS = ("local", "runway", "fal", "none")
CAPTION_STYLES = ("karaoke", "words", "sentence", "off")
MUSIC_CHOICES = ("generated", "dir", "off")
_SCHEMA_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_TELEGRAM_SECRET_RE = re.compile(r"^[A-Za-z0-9_-]{1,256}$")


class ConfigError(ConfigurationError):
    """A configuration variable is missing or has a value we cannot use."""


@dataclass(frozen=True)
class Settings:
    database_url: str | None = None
    database_schema: str = "ai_video_bot"
    data_dir: Path = REPO_ROOT / ".data"

    worker_lease_seconds: int = 120
    worker_max_seconds: int = 600
    worker_poll_seconds: float = 2.0
    worker_listen_seconds: float = 0.0
    worker_concurrency: int = 0
    """Jobs one worker process runs side by side; 0: derived from its CPUs and memory
    (shared/capacity.py)."""
    render_concurrency: int = 0
    """Renders one worker process runs at once; 0: as many as its memory holds."""
    job_max_attempts: int = 5
    retry_base_seconds: float = 5.0
    retry_max_seconds: float = 600.0

    telegram_bot_token: str = ""
    telegram_webhook_secret: str = ""
    telegram_api_base: str = "https://api.telegram.org"
    public_url: str = ""
    allowed_user_ids: frozenset[int] = field(default_factory=frozenset)
    max_description_chars: int = 1000
    max_active_jobs_per_user: int = 1
    max_jobs_per_day: int = 10
    max_concurrent_jobs: int = 5
    rate_limit_per_minute: int = 5
    rate_limit_per_hour: int = 20
    owner_user_ids: frozenset[int] = field(default_factory=frozenset)

    approval_gates: tuple[str, ...] = GATES
    approval_ttl_hours: float = 24.0

    video_seconds: int = 30
    video_format: str = "9:16"
    video_fps: int = 30
    video_resolution: int = 1080

    animation_provider: str = "local"
    animation_concurrency: int = 8
    image_concurrency: int = 8
    voice_concurrency: int = 4
    animation_timeout_seconds: float = 600.0
    animation_poll_seconds: float = 5.0
    runway_api_key: str = ""
    runway_api_base: str = "https://api.dev.runwayml.com"
    runway_api_version: str = "2024-11-06"
    runway_video_model: str = "gen4_turbo"
    runway_image_model: str = "gen4_image"
    fal_key: str = ""
    fal_queue_base: str = "https://queue.fal.run"
    fal_video_model: str = "fal-ai/kling-video/v2.1/standard/image-to-video"

    caption_style: str = "karaoke"
    music: str = "generated"
    music_dir: Path | None = None

    script_provider: str = "local"
    voice_provider: str = "local"
    visuals_provider: str = "local"
    openai_base_url: str = "https://api.openai.com/v1"
    openai_api_key: str = ""
    openai_script_model: str = "gpt-4o-mini"
    openai_tts_model: str = "gpt-4o-mini-tts"
    openai_tts_voice: str = "alloy"
    openai_image_model: str = "gpt-image-1"
    openai_transcribe_model: str = "gpt-4o-mini-transcribe"
    openai_align_model: str = "whisper-1"
    transcribe_provider: str = "local"
    prices_file: Path | None = None
    job_cost_limit_usd: float | None = None
    daily_cost_limit_usd: float | None = None
    openai_timeout_seconds: float = 30.0
    openai_total_seconds: float = 90.0

    db_size_warn_mb: int = 800
    log_level: str = "INFO"

    @property
    def video_size(self) -> tuple[int, int]:
        """(width, height) in pixels for `video_format` at `video_resolution` (its short side)."""
        width, height = VIDEO_FORMATS[self.video_format]
        scale = self.video_resolution / 720
        return int(width * scale) // 2 * 2, int(height * scale) // 2 * 2

    @property
    def webhook_secret_token(self) -> str:
        """The `secret_token` given to setWebhook and expected in the webhook's header.

        Telegram accepts 1-256 characters of `A-Z a-z 0-9 _ -` only, but Render's generated
        values are base64 (`+`, `/`, `=`). A valid secret is used as it is, so existing
        deployments keep working; any other is hashed into a URL-safe token of 43 characters.
        """
        return telegram_secret_token(self.telegram_webhook_secret)

    @property
    def providers_label(self) -> str:
        return (
            f"script:{self.script_provider},voice:{self.voice_provider},"
            f"visuals:{self.visuals_provider},animation:{self.animation_provider}"
        )


def telegram_secret_token(secret: str) -> str:
    """`secret` itself when Telegram accepts it as a `secret_token`, else its SHA-256 digest in
    unpadded URL-safe base64; empty stays empty."""
    if not secret or _TELEGRAM_SECRET_RE.match(secret):
        return secret
    digest = hashlib.sha256(secret.encode("utf-8")).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float, minimum: float = 0.0) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    value = env.get(name, "").strip() or default
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
    return value


def _optional_float(env: Mapping[str, str], name: str) -> float | None:
    """A positive amount, or None when the variable is unset or empty (no limit)."""
    if not env.get(name, "").strip():
        return None
    return _float(env, name, 0.0, minimum=0.0)


def _path(env: Mapping[str, str], name: str) -> Path | None:
    raw = env.get(name, "").strip()
    return Path(raw).expanduser() if raw else None


def _user_ids(raw: str, name: str = "ALLOWED_USER_IDS") -> frozenset[int]:
    ids = set()
    for part in raw.split(","):
        part = part.strip()
        if not part:
            continue
        if not part.lstrip("-").isdigit():
            raise ConfigError(f"{name} must be comma-separated user ids; got {part!r}")
        ids.add(int(part))
    return frozenset(ids)


def _gates(raw: str | None) -> tuple[str, ...]:
    if raw is None:
        return GATES
    names = tuple(
        GATE_ALIASES.get(name.strip(), name.strip()) for name in raw.split(",") if name.strip()
    )
    unknown = [name for name in names if name not in GATES]
    if unknown:
        raise ConfigError(
            f"APPROVAL_GATES may name only {', '.join(GATES)}; got {', '.join(unknown)}"
        )
    return tuple(gate for gate in GATES if gate in names)


def _music(env: Mapping[str, str]) -> str:
    """MUSIC, which is `dir` by default when MUSIC_DIR names a directory of tracks."""
    music_dir = env.get("MUSIC_DIR", "").strip()
    music = _choice(env, "MUSIC", "dir" if music_dir else "generated", MUSIC_CHOICES)
    if music == "dir" and not (music_dir and Path(music_dir).expanduser().is_dir()):
        raise ConfigError(f"MUSIC=dir needs MUSIC_DIR to name a directory; got {music_dir!r}")
    return music


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build `Settings` from `env` (default: the process environment)."""
    env = os.environ if env is None else env
    schema = env.get("DATABASE_SCHEMA", "").strip() or "ai_video_bot"
    if not _SCHEMA_RE.match(schema):
        raise ConfigError(
            "DATABASE_SCHEMA must be a lower-case SQL identifier (letters, digits, _); "
            f"got {schema!r}"
        )
    data_dir = Path(env.get("VIDEOBOT_DATA_DIR", "").strip() or REPO_ROOT / ".data")
    return Settings(
        database_url=env.get("DATABASE_URL", "").strip() or None,
        database_schema=schema,
        data_dir=data_dir.expanduser().resolve(),
        worker_lease_seconds=_int(env, "WORKER_LEASE_SECONDS", 120, minimum=5),
        worker_max_seconds=_int(env, "WORKER_MAX_SECONDS", 600, minimum=1),
        worker_poll_seconds=_float(env, "WORKER_POLL_SECONDS", 2.0, minimum=0.05),
        worker_listen_seconds=_float(env, "WORKER_LISTEN_SECONDS", 0.0),
        worker_concurrency=_int(env, "WORKER_CONCURRENCY", 0, minimum=0),
        render_concurrency=_int(env, "RENDER_CONCURRENCY", 0, minimum=0),
        job_max_attempts=_int(env, "JOB_MAX_ATTEMPTS", 5, minimum=1),
        retry_base_seconds=_float(env, "RETRY_BASE_SECONDS", 5.0),
        retry_max_seconds=_float(env, "RETRY_MAX_SECONDS", 600.0),
        telegram_bot_token=env.get("TELEGRAM_BOT_TOKEN", "").strip(),
        telegram_webhook_secret=env.get("TELEGRAM_WEBHOOK_SECRET", "").strip(),
        telegram_api_base=(
            env.get("TELEGRAM_API_BASE", "").strip() or "https://api.telegram.org"
        ).rstrip("/"),
        public_url=env.get("RENDER_EXTERNAL_URL", "").strip(),
        allowed_user_ids=_user_ids(env.get("ALLOWED_USER_IDS", "")),
        max_description_chars=_int(env, "MAX_DESCRIPTION_CHARS", 1000, minimum=1),
        max_active_jobs_per_user=_int(env, "MAX_ACTIVE_JOBS_PER_USER", 1, minimum=1),
        max_jobs_per_day=_int(env, "MAX_JOBS_PER_DAY", 10, minimum=1),
        max_concurrent_jobs=_int(env, "MAX_CONCURRENT_JOBS", 5, minimum=1),
        rate_limit_per_minute=_int(env, "RATE_LIMIT_PER_MINUTE", 5, minimum=1),
        rate_limit_per_hour=_int(env, "RATE_LIMIT_PER_HOUR", 20, minimum=1),
        owner_user_ids=_user_ids(env.get("OWNER_USER_IDS", ""), "OWNER_USER_IDS"),
        approval_gates=_gates(env.get("APPROVAL_GATES")),
        approval_ttl_hours=_float(env, "APPROVAL_TTL_HOURS", 24.0, minimum=0.001),
        video_seconds=_int(env, "VIDEO_SECONDS", 30, minimum=5),
        video_format=_choice(env, "VIDEO_FORMAT", "9:16", tuple(VIDEO_FORMATS)),
        video_fps=_int(env, "VIDEO_FPS", 30, minimum=1),
        video_resolution=int(_choice(env, "VIDEO_RESOLUTION", "1080", VIDEO_RESOLUTIONS)),
        animation_provider=_choice(env, "ANIMATION_PROVIDER", "local", ANIMATION_PROVIDERS),
        animation_concurrency=_int(env, "ANIMATION_CONCURRENCY", 8, minimum=1),
        image_concurrency=_int(env, "IMAGE_CONCURRENCY", 8, minimum=1),
        voice_concurrency=_int(env, "VOICE_CONCURRENCY", 4, minimum=1),
        animation_timeout_seconds=_float(env, "ANIMATION_TIMEOUT_SECONDS", 600.0, minimum=1.0),
        animation_poll_seconds=_float(env, "ANIMATION_POLL_SECONDS", 5.0, minimum=0.05),
        runway_api_key=env.get("RUNWAY_API_KEY", "").strip(),
        runway_api_base=(
            env.get("RUNWAY_API_BASE", "").strip() or "https://api.dev.runwayml.com"
        ).rstrip("/"),
        runway_api_version=env.get("RUNWAY_API_VERSION", "").strip() or "2024-11-06",
        runway_video_model=env.get("RUNWAY_VIDEO_MODEL", "").strip() or "gen4_turbo",
        runway_image_model=env.get("RUNWAY_IMAGE_MODEL", "").strip() or "gen4_image",
        fal_key=env.get("FAL_KEY", "").strip(),
        fal_queue_base=(env.get("FAL_QUEUE_BASE", "").strip() or "https://queue.fal.run").rstrip(
            "/"
        ),
        fal_video_model=(
            env.get("FAL_VIDEO_MODEL", "").strip()
            or "fal-ai/kling-video/v2.1/standard/image-to-video"
        ),
        caption_style=_choice(env, "CAPTION_STYLE", "karaoke", CAPTION_STYLES),
        music=_music(env),
        music_dir=_path(env, "MUSIC_DIR"),
        script_provider=_choice(env, "SCRIPT_PROVIDER", "local", PROVIDER_NAMES),
        voice_provider=_choice(env, "VOICE_PROVIDER", "local", PROVIDER_NAMES),
        visuals_provider=_choice(env, "VISUALS_PROVIDER", "local", VISUALS_PROVIDERS),
        openai_base_url=(
            env.get("OPENAI_BASE_URL", "").strip() or "https://api.openai.com/v1"
        ).rstrip("/"),
        openai_api_key=env.get("OPENAI_API_KEY", "").strip(),
        openai_script_model=env.get("OPENAI_SCRIPT_MODEL", "").strip() or "gpt-4o-mini",
        openai_tts_model=env.get("OPENAI_TTS_MODEL", "").strip() or "gpt-4o-mini-tts",
        openai_tts_voice=env.get("OPENAI_TTS_VOICE", "").strip() or "alloy",
        openai_image_model=env.get("OPENAI_IMAGE_MODEL", "").strip() or "gpt-image-1",
        openai_transcribe_model=(
            env.get("OPENAI_TRANSCRIBE_MODEL", "").strip() or "gpt-4o-mini-transcribe"
        ),
        openai_align_model=env.get("OPENAI_ALIGN_MODEL", "").strip() or "whisper-1",
        transcribe_provider=_choice(env, "TRANSCRIBE_PROVIDER", "local", PROVIDER_NAMES),
        prices_file=_path(env, "PRICES_FILE"),
        job_cost_limit_usd=_optional_float(env, "JOB_COST_LIMIT_USD"),
        daily_cost_limit_usd=_optional_float(env, "DAILY_COST_LIMIT_USD"),
        openai_timeout_seconds=_float(env, "OPENAI_TIMEOUT_SECONDS", 30.0, minimum=1.0),
        openai_total_seconds=_float(env, "OPENAI_TOTAL_SECONDS", 90.0, minimum=1.0),
        db_size_warn_mb=_int(env, "DB_SIZE_WARN_MB", 800, minimum=1),
        log_level=(env.get("LOG_LEVEL", "").strip() or "INFO").upper(),
    )
