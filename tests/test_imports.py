"""Optional dependencies stay optional: a provider's libraries load only when it is chosen."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from shared.config import REPO_ROOT

# What the worker loads: its entry point, the chosen providers and the pipeline steps.
WORKER_IMPORTS = """
import json
import sys

import functions.worker.main
import shared.pipeline.steps
import shared.pipeline.storyboard
from shared.config import load_settings
from shared.providers import make_providers

make_providers(load_settings())
print(json.dumps(sorted(sys.modules)))
"""


def _modules_loaded_by_worker(voice_provider: str) -> list[str]:
    env = {
        **os.environ,
        "SCRIPT_PROVIDER": "openai",
        "VOICE_PROVIDER": voice_provider,
        "VISUALS_PROVIDER": "openai",
        "ANIMATION_PROVIDER": "fal",
        "FAL_KEY": "x",
        "OPENAI_API_KEY": "x",
    }
    completed = subprocess.run(
        [sys.executable, "-c", WORKER_IMPORTS],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout)


def test_all_openai_worker_never_loads_espeak() -> None:
    modules = _modules_loaded_by_worker("openai")
    assert "espeakng_loader" not in modules
    assert not any(name.startswith("shared.providers.local") for name in modules)


def test_local_voice_loads_espeak_and_nothing_else_local() -> None:
    modules = _modules_loaded_by_worker("local")
    assert "espeakng_loader" in modules
    assert "shared.providers.local_voice" in modules
    assert "shared.providers.local_visuals" not in modules
