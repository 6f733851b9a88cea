"""Script provider that needs no network: the description's own sentences become the scenes."""

from __future__ import annotations

import logging

from shared.plan import ScenePlan, plan_from_text

logger = logging.getLogger(__name__)


class LocalScript:
    """Script provider that turns the description itself into scenes (see `plan_from_text`)."""

    def write(self, description: str, language: str, seconds: int, variant: int = 0) -> ScenePlan:
        """Variant n > 0 (a "regenerate" press) keeps the user's sentences, the narration, but
        frames them anew: its title comes from the n-th sentence and the stills get a new look."""
        title = None
        if variant:
            sentences = plan_from_text(description, language, seconds).scenes
            title = sentences[variant % len(sentences)].on_screen_text
        plan = plan_from_text(description, language, seconds, title=title)
        logger.info("local script written scenes=%d title=%r", len(plan.scenes), plan.title)
        return plan
