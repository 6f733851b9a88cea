"""Soak: 30 real jobs through 3 looping worker processes that are SIGKILLed at random and
restarted, while the Bot API stand-in answers some calls 429 (retry_after) or 5xx and drops the
answer to some uploads after recording the video. No video may be lost or sent twice, and no
job may be left unfinished. The harness is localapi/soak.py; `python -m bench.soak` runs it
bigger.

Each run draws its seed and prints it; replay a failure with SOAK_SEED=<seed>.
"""

from __future__ import annotations

import os
import random

from localapi.soak import SoakPlan, run_soak

JOBS = 24
TIMEOUT_S = 180.0


def test_no_video_is_lost_or_duplicated_under_kills_and_telegram_faults(schema_env, tmp_path):
    seed = int(os.environ.get("SOAK_SEED") or random.randrange(1_000_000))
    print(f"soak seed={seed} (replay: SOAK_SEED={seed})")
    log_path = tmp_path / "workers.log"
    report = run_soak(schema_env, SoakPlan(jobs=JOBS, seed=seed, timeout_s=TIMEOUT_S), log_path)
    summary = report.summary()
    print(summary)
    context = f"seed={seed} {summary} workers' log: {log_path}\n{report.failures()}"

    assert report.kills > 0 and summary["faults"].get("dropped"), context
    assert report.ids("stuck") == [], f"jobs unfinished after {TIMEOUT_S}s: {context}"
    assert report.ids("duplicated") == [], context
    assert report.passed, context
