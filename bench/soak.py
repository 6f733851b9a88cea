"""Soak bench: real jobs through 3 worker processes SIGKILLed at random, against a Bot API
stand-in answering 429 / 5xx and dropping the answers to some uploads (localapi/soak.py, the
harness tests/test_soak.py runs with 30 jobs). It counts lost, duplicated and stuck videos, and
measures jobs/minute against a baseline from the same run: the same kind of jobs, same workers,
no faults and no kills, so `ratio` is the throughput that chaos leaves.

    python -m bench.soak [--jobs 200] [--baseline-jobs 40] [--seed N]

Embedded PostgreSQL, or DATABASE_URL when set; each run uses throw-away schemas. The last line
is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import uuid
from pathlib import Path

from localapi.soak import SoakPlan, SoakReport, run_soak
from shared import db as dbmod
from shared.config import load_settings
from shared.migrate import migrate


def soak_in_fresh_schema(plan: SoakPlan, log_path: Path) -> SoakReport:
    env = {
        "DATABASE_URL": dbmod.database_url(load_settings()),
        "DATABASE_SCHEMA": f"bench_{uuid.uuid4().hex[:8]}",
    }
    database = dbmod.connect(load_settings(env), "bench")
    migrate(database)
    try:
        return run_soak(env, plan, log_path)
    finally:
        database.execute(f"DROP SCHEMA {env['DATABASE_SCHEMA']} CASCADE")
        database.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument(
        "--baseline-jobs",
        type=int,
        default=40,
        help="jobs of the no-chaos baseline (its jobs/minute is the yardstick)",
    )
    parser.add_argument("--seed", type=int, default=random.randrange(1_000_000))
    args = parser.parse_args()
    log_dir = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    print(f"seed={args.seed} workers' logs in {log_dir}", flush=True)

    baseline = soak_in_fresh_schema(
        SoakPlan(
            jobs=args.baseline_jobs,
            seed=args.seed,
            chaos=False,
            timeout_s=60 + 6 * args.baseline_jobs,
        ),
        log_dir / "baseline.log",
    )
    print(f"baseline (no faults, no kills): {baseline.summary()}", flush=True)
    chaos = soak_in_fresh_schema(
        SoakPlan(jobs=args.jobs, seed=args.seed, timeout_s=60 + 6 * args.jobs),
        log_dir / "soak.log",
    )
    print(f"soak (faults and kills): {chaos.summary()}", flush=True)
    if not chaos.passed:
        print(chaos.failures())
    print(
        json.dumps(
            {
                "bench": "soak",
                **chaos.summary(),
                "passed": chaos.passed,
                "baseline_jobs": len(baseline.outcomes),
                "baseline_passed": baseline.passed,
                "baseline_elapsed_s": round(baseline.elapsed_s, 1),
                "baseline_jobs_per_min": round(baseline.jobs_per_minute, 1),
                "ratio": round(chaos.jobs_per_minute / baseline.jobs_per_minute, 2),
                "cpus": os.cpu_count(),
            }
        )
    )


if __name__ == "__main__":
    main()
