"""Every user-facing string of the bot, in Russian and English.

`t(key, language, **fmt)` looks a string up and fills in its `{placeholders}`. Users whose
Telegram language is Russian (or unknown) get Russian; everyone else gets English. Nothing here
talks to Telegram or the database, so the webhook and the worker share it freely.
"""

from __future__ import annotations

from typing import Sequence

LANGUAGES = ("ru", "en")
DEFAULT_LANGUAGE = "ru"

TEXTS: dict[str, dict[str, str]] = {
    # --- Conversation (webhook) ---
    "welcome": {
        "ru": (
            "👋 Привет! Я превращаю текстовое описание в короткое видео.\n\n"
            "Как это работает:\n"
            "1. Опишите видео одним сообщением (до {max_chars} символов).\n"
            "2. Я напишу сценарий — одобрите его, попросите другой вариант или ответьте на "
            "сообщение со сценарием своей исправленной версией.\n"
            "3. Затем одобрите раскадровку, потом оживлённые сцены, и я пришлю готовый ролик.\n\n"
            "Команды: /status — ваши задания, /cancel — отменить текущее, /help — подсказка."
        ),
        "en": (
            "👋 Hi! I turn a text description into a short video.\n\n"
            "How it works:\n"
            "1. Describe the video in one message (up to {max_chars} characters).\n"
            "2. I write a script: approve it, ask for another one, or reply to the script "
            "message with your corrected version.\n"
            "3. Then approve the storyboard, then the animated scenes, and I send you the "
            "finished clip.\n\n"
            "Commands: /status shows your jobs, /cancel cancels the current one, /help shows this."
        ),
    },
    "help": {
        "ru": (
            "Отправьте текстом, о чём должно быть видео (до {max_chars} символов), например: "
            "«Утро в горах: туман, солнце, чашка кофе на веранде».\n\n"
            "/status — ваши задания, /cancel — отменить текущее задание."
        ),
        "en": (
            "Send me, as text, what the video should be about (up to {max_chars} characters), "
            'for example: "Morning in the mountains: mist, sunrise, a cup of coffee on the porch".\n\n'
            "/status shows your jobs, /cancel cancels the current job."
        ),
    },
    "unknown_command": {
        "ru": "Я не знаю такой команды. Отправьте описание видео или /help.",
        "en": "I don't know that command. Send a video description, or /help.",
    },
    "job_accepted": {
        "ru": "👍 Принято! Задание #{job_id} в очереди — скоро пришлю сценарий на одобрение.",
        "en": "👍 Got it! Job #{job_id} is queued; I'll send you the script to approve soon.",
    },
    "description_empty": {
        "ru": "Описание пустое. Напишите текстом, каким должно быть видео.",
        "en": "The description is empty. Write, as text, what the video should be.",
    },
    "description_too_long": {
        "ru": "Слишком длинное описание: {length} символов, а можно не больше {max_chars}. "
        "Сократите его и отправьте снова.",
        "en": "That description is too long: {length} characters, the limit is {max_chars}. "
        "Shorten it and send it again.",
    },
    "too_many_active": {
        "ru": "⏳ У вас уже есть задание в работе (можно не больше {limit} одновременно). "
        "Дождитесь его окончания: /status покажет, как оно идёт, а /cancel отменит его.",
        "en": "⏳ You already have a job in progress (at most {limit} at a time). "
        "Wait for it to finish: /status shows how it is going and /cancel cancels it.",
    },
    "daily_limit": {
        "ru": "📅 На сегодня лимит исчерпан: {limit} видео в день. Возвращайтесь завтра!",
        "en": "📅 You have reached today's limit of {limit} videos. Please come back tomorrow!",
    },
    "rate_limit_minute": {
        "ru": "⏱ Не больше {limit} видео в минуту. Отправьте описание снова через {wait}.",
        "en": "⏱ At most {limit} videos a minute. Send your description again in {wait}.",
    },
    "rate_limit_hour": {
        "ru": "⏱ Не больше {limit} видео в час. Отправьте описание снова через {wait}.",
        "en": "⏱ At most {limit} videos an hour. Send your description again in {wait}.",
    },
    "in_line": {
        "ru": "⏳ Сейчас заняты все места для генерации ({slots}). Перед вашим заданием в очереди: {ahead}.",
        "en": "⏳ All {slots} generation slots are busy. Jobs in line ahead of yours: {ahead}.",
    },
    "not_allowed": {
        "ru": "🔒 Извините, этот бот пока доступен только приглашённым пользователям.",
        "en": "🔒 Sorry, this bot is only open to invited users for now.",
    },
    "text_expected": {
        "ru": "Я понимаю только текст 🙂 Опишите видео словами в одном сообщении.",
        "en": "I only understand text 🙂 Describe the video in words, in one message.",
    },
    "edit_accepted": {
        "ru": "✍️ Спасибо! Переписываю сценарий по вашей версии — пришлю его на одобрение.",
        "en": "✍️ Thanks! I'm rewriting the script from your version and will send it to approve.",
    },
    "edit_not_open": {
        "ru": "Этот сценарий уже нельзя изменить: решение по нему принято или время вышло.",
        "en": "This script can no longer be edited: it was already decided on, or time ran out.",
    },
    "edit_only_script": {
        "ru": "Ответом можно исправить только сценарий. Для раскадровки используйте кнопки.",
        "en": "Only the script can be edited by replying. Use the buttons for the storyboard.",
    },
    "cancelled_jobs": {
        "ru": "❌ Отменено заданий: {count}. Присылайте новое описание, когда захотите.",
        "en": "❌ Cancelled {count} job(s). Send a new description whenever you like.",
    },
    "nothing_to_cancel": {
        "ru": "Нечего отменять: у вас нет заданий в работе.",
        "en": "Nothing to cancel: you have no job in progress.",
    },
    "status_header": {"ru": "Ваши последние задания:", "en": "Your recent jobs:"},
    "status_line": {
        "ru": "#{job_id} «{description}» — {where}",
        "en": '#{job_id} "{description}" — {where}',
    },
    "status_none": {
        "ru": "У вас пока нет заданий. Отправьте описание видео, чтобы начать.",
        "en": "You have no jobs yet. Send a video description to start.",
    },
    "state_queued": {"ru": "в очереди", "en": "queued"},
    "state_running": {"ru": "в работе: {step}", "en": "in progress: {step}"},
    "state_waiting_script": {
        "ru": "ждёт вашего одобрения сценария",
        "en": "waiting for you to approve the script",
    },
    "state_waiting_images": {
        "ru": "ждёт вашего одобрения раскадровки",
        "en": "waiting for you to approve the storyboard",
    },
    "state_waiting_videos": {
        "ru": "ждёт вашего одобрения анимации",
        "en": "waiting for you to approve the clips",
    },
    "state_done": {"ru": "готово ✅", "en": "done ✅"},
    "state_failed": {"ru": "не получилось ⚠️", "en": "failed ⚠️"},
    "state_cancelled": {"ru": "отменено", "en": "cancelled"},
    "step_script": {"ru": "пишу сценарий", "en": "writing the script"},
    "step_review_script": {"ru": "готовлю сценарий к показу", "en": "preparing the script for you"},
    "step_media": {
        "ru": "рисую сцены и записываю озвучку",
        "en": "drawing scenes and recording the voice-over",
    },
    "step_review_images": {
        "ru": "готовлю раскадровку к показу",
        "en": "preparing the storyboard for you",
    },
    "step_animate": {"ru": "оживляю сцены", "en": "animating the scenes"},
    "step_review_videos": {
        "ru": "готовлю анимацию к показу",
        "en": "preparing the clips for you",
    },
    "step_render": {"ru": "монтирую видео", "en": "rendering the video"},
    "step_deliver": {"ru": "отправляю видео", "en": "sending the video"},
    "step_other": {"ru": "обработка", "en": "processing"},
    # --- Gate buttons and the answers to pressing them ---
    "button_approve": {"ru": "✅ Одобрить", "en": "✅ Approve"},
    "button_regenerate": {"ru": "🔁 Заново", "en": "🔁 Regenerate"},
    "button_cancel": {"ru": "❌ Отмена", "en": "❌ Cancel"},
    "pressed_approve": {"ru": "✅ Одобрено — работаю дальше", "en": "✅ Approved — working on it"},
    "pressed_regenerate": {"ru": "🔁 Делаю новый вариант", "en": "🔁 Making a new version"},
    "pressed_cancel": {"ru": "❌ Задание отменено", "en": "❌ Job cancelled"},
    "decided_approve": {"ru": "✅ Одобрено", "en": "✅ Approved"},
    "decided_regenerate": {"ru": "🔁 Запрошен новый вариант", "en": "🔁 New version requested"},
    "decided_cancel": {"ru": "❌ Отменено", "en": "❌ Cancelled"},
    "press_already_decided": {
        "ru": "Решение по этому шагу уже принято.",
        "en": "This step has already been decided.",
    },
    "press_expired": {
        "ru": "⌛ Эти кнопки устарели.",
        "en": "⌛ These buttons have expired.",
    },
    "press_job_closed": {
        "ru": "Это задание уже завершено или отменено.",
        "en": "This job is already finished or cancelled.",
    },
    "press_not_yours": {"ru": "⛔ Это не ваша кнопка.", "en": "⛔ This button is not yours."},
    "press_invalid": {"ru": "⛔ Эта кнопка недействительна.", "en": "⛔ This button is not valid."},
    # --- A delivery whose outcome is unknown, and its "send again" button ---
    "delivery_unknown": {
        "ru": (
            "⚠️ Видео для задания #{job_id} могло не дойти: Telegram не подтвердил отправку. "
            "Если его нет выше, нажмите кнопку — я отправлю его ещё раз."
        ),
        "en": (
            "⚠️ The video for job #{job_id} may not have arrived: Telegram did not confirm it. "
            "If you don't see it above, press the button and I'll send it again."
        ),
    },
    "progress_unknown": {"ru": "⚠️ Отправлено без подтверждения", "en": "⚠️ Sent, not confirmed"},
    "button_resend": {"ru": "📤 Отправить ещё раз", "en": "📤 Send it again"},
    "pressed_resend": {"ru": "📤 Отправляю видео ещё раз", "en": "📤 Sending the video again"},
    "decided_resend": {"ru": "📤 Отправляю ещё раз", "en": "📤 Sending it again"},
    "resend_not_needed": {
        "ru": "Это видео уже отправлено ещё раз.",
        "en": "This video has already been sent again.",
    },
    "resend_busy": {
        "ru": "⏳ Я ещё заканчиваю это задание — нажмите через минуту.",
        "en": "⏳ I'm still finishing this job; press again in a minute.",
    },
    # --- Worker messages ---
    "script_header": {"ru": "📝 Сценарий: «{title}»", "en": '📝 Script: "{title}"'},
    "script_scene": {"ru": "{number}. {text}", "en": "{number}. {text}"},
    "script_footer": {
        "ru": "Одобрите сценарий или попросите другой. Чтобы исправить его, ответьте на это "
        "сообщение исправленным сценарием.",
        "en": "Approve the script or ask for another one. To edit it, reply to this message "
        "with a corrected script.",
    },
    "storyboard_caption": {
        "ru": "🖼 Раскадровка «{title}»: {scenes} сцен(ы). Одобрить кадры?",
        "en": '🖼 Storyboard for "{title}": {scenes} scene(s). Approve the stills?',
    },
    "progress_script": {"ru": "✍️ Пишу сценарий…", "en": "✍️ Writing the script…"},
    "progress_images": {"ru": "🎨 Рисую сцены… {pct}%", "en": "🎨 Drawing scenes… {pct}%"},
    "progress_voice": {
        "ru": "🎙 Записываю озвучку… {pct}%",
        "en": "🎙 Recording the voice-over… {pct}%",
    },
    "progress_animate": {
        "ru": "🎞 Оживляю сцену {scene} из {scenes}…",
        "en": "🎞 Animating scene {scene} of {scenes}…",
    },
    "progress_animate_remote": {
        "ru": "🎞 Оживляю сцены… готово {done} из {scenes}",
        "en": "🎞 Animating the scenes… {done} of {scenes} ready",
    },
    "videos_caption": {
        "ru": "🎞 Анимация «{title}»: {scenes} сцен(ы), коротко. Одобрить и монтировать видео?",
        "en": '🎞 Clips for "{title}": {scenes} scene(s), in short. Approve and render the video?',
    },
    "videos_fallback": {
        "ru": "⚠️ Сцены {scenes} остались картинками с движением камеры: анимацию не удалось "
        "получить. 🔁 сделает все сцены заново.",
        "en": "⚠️ Scene(s) {scenes} stay stills with a camera pan: their clips could not be "
        "made. 🔁 makes all the clips again.",
    },
    "animation_fallback": {
        "ru": "⚠️ Задание #{job_id}: сцены {scenes} останутся картинками с движением камеры — "
        "анимацию не удалось получить. Остальное видео готовится как обычно.",
        "en": "⚠️ Job #{job_id}: scene(s) {scenes} stay stills with a camera pan — their clips "
        "could not be made. The rest of the video goes on as usual.",
    },
    "progress_render": {"ru": "🎬 Монтирую… {pct}%", "en": "🎬 Rendering… {pct}%"},
    "progress_sending": {"ru": "📤 Отправляю…", "en": "📤 Sending…"},
    "progress_done": {"ru": "✅ Готово", "en": "✅ Done"},
    "approval_expired": {
        "ru": "⌛ Время на решение вышло, задание #{job_id} остановлено. "
        "Отправьте описание снова, чтобы начать заново.",
        "en": "⌛ Time to decide ran out, so job #{job_id} was stopped. "
        "Send the description again to start over.",
    },
    "job_cancelled": {
        "ru": "❌ Задание #{job_id} отменено.",
        "en": "❌ Job #{job_id} was cancelled.",
    },
    "bot_unavailable": {
        "ru": (
            "😔 Задание #{job_id} остановлено: бот сейчас недоступен (его владельцу нужно "
            "исправить настройки). Попробуйте позже."
        ),
        "en": (
            "😔 Job #{job_id} has stopped: the bot is unavailable right now (its owner needs to "
            "fix its settings). Please try again later."
        ),
    },
    "job_failed": {
        "ru": "⚠️ Не удалось {what}. Отправьте описание снова, чтобы повторить.",
        "en": "⚠️ Could not {what}. Send the description again to retry.",
    },
    "failed_script": {"ru": "написать сценарий", "en": "write the script"},
    "failed_images": {"ru": "подготовить раскадровку", "en": "prepare the storyboard"},
    "failed_media": {
        "ru": "записать озвучку и нарисовать сцены",
        "en": "record the voice-over and draw the scenes",
    },
    "failed_animate": {"ru": "оживить сцены", "en": "animate the scenes"},
    "failed_videos": {"ru": "подготовить анимацию", "en": "prepare the clips"},
    "failed_render": {"ru": "смонтировать видео", "en": "render the video"},
    "failed_deliver": {"ru": "отправить видео", "en": "send the video"},
    "failed_other": {"ru": "сделать видео", "en": "make the video"},
    "video_caption": {"ru": "🎬 «{title}»", "en": '🎬 "{title}"'},
    # --- Spoken descriptions (voice, audio, video notes) ---
    "voice_disabled": {
        "ru": "🎙 Голосовые описания сейчас не распознаются. Пожалуйста, напишите описание "
        "текстом или попросите владельца бота включить распознавание голоса.",
        "en": "🎙 I can't listen to voice descriptions right now. Please type it, or ask the "
        "bot's owner to enable voice.",
    },
    "voice_too_big": {
        "ru": "Файл слишком большой ({size_mb} МБ): я могу скачать не больше {limit_mb} МБ. "
        "Запишите сообщение покороче или напишите описание текстом.",
        "en": "That file is too big ({size_mb} MB): I can download at most {limit_mb} MB. "
        "Record a shorter message, or type the description.",
    },
    "voice_accepted": {
        "ru": "🎙 Принято! Задание #{job_id}: распознаю голос и пришлю сценарий на одобрение.",
        "en": "🎙 Got it! Job #{job_id}: I'll transcribe your message and send you the script "
        "to approve.",
    },
    "voice_heard": {"ru": "🎙 Я услышал: «{text}»", "en": '🎙 I heard: "{text}"'},
    "voice_empty": {
        "ru": "🎙 Задание #{job_id}: я не расслышал ни слова. Запишите сообщение ещё раз или "
        "напишите описание текстом.",
        "en": "🎙 Job #{job_id}: I couldn't hear any words. Record the message again, or type "
        "the description.",
    },
    "voice_too_long": {
        "ru": "🎙 Задание #{job_id}: описание получилось слишком длинным ({length} символов, "
        "можно не больше {max_chars}). Запишите покороче или напишите текстом.",
        "en": "🎙 Job #{job_id}: the description came out too long ({length} characters, the "
        "limit is {max_chars}). Record a shorter one, or type it.",
    },
    "voice_language": {
        "ru": "🎙 Задание #{job_id}: я понимаю только русский и английский, а это, похоже, "
        "другой язык. Запишите сообщение по-русски или по-английски.",
        "en": "🎙 Job #{job_id}: I only understand Russian and English, and this seems to be "
        "another language. Record the message in English or Russian.",
    },
    "progress_transcribe": {
        "ru": "🎙 Распознаю голосовое сообщение…",
        "en": "🎙 Transcribing your voice message…",
    },
    "step_transcribe": {"ru": "распознаю голос", "en": "transcribing your voice"},
    "failed_transcribe": {"ru": "распознать голосовое сообщение", "en": "transcribe your message"},
}


# --- Time and cost (shared/costs.py) ---
TEXTS.update(
    {
        "job_estimate": {
            "ru": "⏱ Примерно {minutes} мин работы, плюс время на ваши одобрения.",
            "en": "⏱ About {minutes} min of work, plus the time you take to approve.",
        },
        "video_times": {
            "ru": "⏱ Всего {total}, из них {deciding} — ожидание ваших решений",
            "en": "⏱ {total} in all, {deciding} of it waiting for your decisions",
        },
        "cost_limit_job": {
            "ru": (
                "💸 Задание #{job_id} остановлено: это видео обошлось бы дороже, чем "
                "разрешил владелец бота."
            ),
            "en": ("💸 Job #{job_id} stopped: this video would cost more than the owner allows."),
        },
        "cost_limit_day": {
            "ru": (
                "💸 Задание #{job_id} остановлено: бот исчерпал дневной бюджет, который "
                "разрешил владелец. Попробуйте завтра."
            ),
            "en": (
                "💸 Job #{job_id} stopped: the bot has spent all the owner allows for today. "
                "Try again tomorrow."
            ),
        },
        "status_spent": {"ru": "{line} (⏱ {work}, 💵 {usd})", "en": "{line} (⏱ {work}, 💵 {usd})"},
        "owner_stats": {
            "ru": (
                "📊 Задания: {states}\n💵 Сегодня (UTC): {usd_today}, вызовов: {calls_today}\n"
                "⏳ Дольше всех ждёт: {oldest}\n🗄 База данных: {size}"
            ),
            "en": (
                "📊 Jobs: {states}\n💵 Today (UTC): {usd_today} in {calls_today} calls\n"
                "⏳ Waiting longest: {oldest}\n🗄 Database: {size}"
            ),
        },
        "owner_stats_waiting": {
            "ru": "#{job_id} у шага «{gate}», {age}",
            "en": "#{job_id} at the {gate} gate for {age}",
        },
        "owner_stats_none": {"ru": "нет", "en": "none"},
    }
)


# --- Stills that fell back to a local card (shared/pipeline/media.py) ---
TEXTS.update(
    {
        "images_fallback": {
            "ru": "⚠️ Сцены {scenes} нарисованы простыми карточками: картинки не удалось "
            "получить. 🔁 нарисует все сцены заново.",
            "en": "⚠️ Scene(s) {scenes} are plain cards: their pictures could not be made. "
            "🔁 draws all the scenes again.",
        },
        "stills_fallback": {
            "ru": "⚠️ Задание #{job_id}: сцены {scenes} будут простыми карточками — картинки "
            "не удалось получить. Остальное видео готовится как обычно.",
            "en": "⚠️ Job #{job_id}: scene(s) {scenes} are plain cards — their pictures could "
            "not be made. The rest of the video goes on as usual.",
        },
    }
)


def language_for(language_code: object) -> str:
    """The bot's language for a Telegram `language_code`: Russian for ru-* or none, else English."""
    if not isinstance(language_code, str) or not language_code.strip():
        return DEFAULT_LANGUAGE
    return "ru" if language_code.strip().lower().split("-")[0] == "ru" else "en"


def t(key: str, language: str, **fmt: object) -> str:
    """The text `key` in `language` (anything but ru/en falls back as `language_for` says)."""
    variants = TEXTS[key]
    text = variants[language] if language in variants else variants[language_for(language)]
    return text.format(**fmt) if fmt else text


def script_message(title: str, scenes: Sequence[str], language: str) -> str:
    """The script as the user sees it at the script gate: header, numbered scenes, the hint."""
    lines = [t("script_header", language, title=title), ""]
    lines += [
        t("script_scene", language, number=number, text=text)
        for number, text in enumerate(scenes, start=1)
    ]
    lines += ["", t("script_footer", language)]
    return "\n".join(lines)


def failure_notice(step: str, language: str) -> str:
    """'Could not <what the step does>. Send the description again to retry.'"""
    what_key = f"failed_{step}" if f"failed_{step}" in TEXTS else "failed_other"
    return t("job_failed", language, what=t(what_key, language))


def step_name(step: str, language: str) -> str:
    """A job step in words, for /status."""
    return t(f"step_{step}" if f"step_{step}" in TEXTS else "step_other", language)


def format_duration(seconds: float, language: str) -> str:
    """'45 s', '3 min 05 s', '2 h 04 min' (in Russian: с, мин, ч)."""
    whole = max(0, round(seconds))
    sec, minute, hour = ("с", "мин", "ч") if language_for(language) == "ru" else ("s", "min", "h")
    if whole < 60:
        return f"{whole} {sec}"
    if whole < 3600:
        return f"{whole // 60} {minute} {whole % 60:02d} {sec}"
    return f"{whole // 3600} {hour} {whole % 3600 // 60:02d} {minute}"
