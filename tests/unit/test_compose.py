"""docker-compose.yaml: valid for Compose (``docker-compose config``) and shaped like the official Airflow 3.3
file (CeleryExecutor, Redis, PostgreSQL) plus tillflow's services, pools and connections.

Needs the ``docker-compose`` binary (Compose v1, Debian's package; ``config`` needs no Docker engine):
``apt-get install -y docker-compose`` — ``.ci/run`` installs it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from tillflow.pools import POOLS

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yaml"
OFFICIAL = {
    "postgres",
    "redis",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-worker",
    "airflow-triggerer",
    "airflow-init",
    "airflow-cli",
    "flower",
}
TILLFLOW = {"tillflow-db", "sandbox", "mailcatcher"}
RUNTIME = ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-worker", "airflow-triggerer")


def compose_config(**env: str) -> dict:
    """``docker-compose config`` of the file (variables interpolated, anchors merged), parsed."""
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.fail(
            "docker-compose not found: install Compose to check docker-compose.yaml "
            "(Debian/Ubuntu: apt-get install -y docker-compose; .ci/run does)"
        )
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MAIL_", "TILLFLOW_DB_", "AIRFLOW_"))}
    done = subprocess.run(
        [binary, "-f", str(COMPOSE), "config"],
        env={**clean, "AIRFLOW_UID": "1000", **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout)


@pytest.fixture(scope="module")
def config() -> dict:
    return compose_config()


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _init_script(config: dict) -> str:
    command = config["services"]["airflow-init"]["command"]
    return command if isinstance(command, str) else "\n".join(command)


def test_compose_validates_with_the_official_services_and_tillflows(config):
    services = set(config["services"])
    assert OFFICIAL | TILLFLOW <= services, sorted((OFFICIAL | TILLFLOW) - services)


def test_airflow_services_share_the_official_celery_setup(config, raw):
    assert "x-airflow-common" in raw, "the official file's anchor"
    for name in (*RUNTIME, "airflow-init"):
        env = config["services"][name]["environment"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        assert re.fullmatch(r"redis://.*@redis:6379/\d+", env["AIRFLOW__CELERY__BROKER_URL"]), name
        assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql://"), name
        assert "@postgres/airflow" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"], name
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/", name
        # tillflow's own database is a separate server, and the DAGs use the vendor pools
        assert "@tillflow-db:5432/tillflow" in env["TILLFLOW_DATABASE_URL"], name
        assert env["TILLFLOW_POOLS"] == "true", name
    assert config["services"]["airflow-apiserver"]["command"] in ("api-server", ["api-server"])
    assert config["services"]["airflow-worker"]["command"] in ("celery worker", ["celery", "worker"])


def test_nothing_schedules_before_init_created_the_pools(config):
    for name in RUNTIME:
        depends = config["services"][name]["depends_on"]
        assert depends["airflow-init"]["condition"] == "service_completed_successfully", name
        assert depends["tillflow-db"]["condition"] == "service_healthy", name
    script = _init_script(config)
    # pools after the entrypoint migrated the DB; a failure fails the init (tasks would wait forever)
    assert script.index("/entrypoint airflow version") < script.index("python -m tillflow.pools apply")
    assert re.search(r"PYTHONPATH=/opt/airflow/plugins /entrypoint python -m tillflow\.pools apply \|\| exit 1", script)


def test_init_creates_the_connections_without_overwriting_edits(config):
    script = _init_script(config)
    assert "airflow connections import" in script and "--overwrite" not in script
    body = script[script.index("<<'EOF'") + len("<<'EOF'") : script.index("\nEOF")]
    conns = yaml.safe_load(body)  # JSON is YAML
    assert conns["smtp_default"]["host"] == "mailcatcher" and conns["smtp_default"]["port"] == 8025
    assert conns["tillflow_db"]["host"] == "tillflow-db"


def test_the_sandbox_serves_every_stand_in_on_its_usual_port(config):
    run_py = (ROOT / "include" / "sandbox" / "run.py").read_text()
    defaults = dict(re.findall(r'add_argument\("(--[a-z]+-port)", type=int, default=(\d+)', run_py))
    assert len(defaults) >= 10, defaults
    sandbox = config["services"]["sandbox"]
    command = sandbox["command"]
    flags = dict(zip(command, command[1:], strict=False))
    assert {flag: flags.get(flag) for flag in defaults} == defaults, "every stand-in, on the port run.py uses"
    assert flags["--host"] == "0.0.0.0", "reachable from the other containers"
    published = {int(p["published"]) for p in sandbox["ports"]}
    assert {int(port) for port in defaults.values()} <= published
    assert config["services"]["airflow-worker"]["depends_on"]["sandbox"]["condition"] == "service_healthy"


def test_the_mail_catchers_port_is_configurable():
    def smtp(config):
        catcher = config["services"]["mailcatcher"]
        ports = {(int(p["published"]), int(p["target"])) for p in catcher["ports"]}
        airflow_smtp = config["services"]["airflow-worker"]["environment"]["AIRFLOW__SMTP__SMTP_PORT"]
        script = _init_script(config)
        conn_port = yaml.safe_load(script[script.index("<<'EOF'") + 7 : script.index("\nEOF")])["smtp_default"]["port"]
        return catcher["environment"]["MP_SMTP_BIND_ADDR"], ports, int(airflow_smtp), conn_port

    bind, ports, airflow_port, conn_port = smtp(compose_config())
    assert (bind, airflow_port, conn_port) == ("0.0.0.0:8025", 8025, 8025) and (8025, 8025) in ports
    bind, ports, airflow_port, conn_port = smtp(compose_config(MAIL_PORT="2525", MAIL_UI_PORT="9025"))
    assert (bind, airflow_port, conn_port) == ("0.0.0.0:2525", 2525, 2525)
    assert ports == {(2525, 2525), (9025, 9025)}


def test_every_vendor_pool_is_created_by_init(config):
    """The init creates them from plugins/tillflow/pools.py itself (one list), mounted into the container."""
    mounts = [
        m["target"] if isinstance(m, dict) else m.split(":")[1] for m in config["services"]["airflow-init"]["volumes"]
    ]
    assert "/opt/airflow/plugins" in mounts
    assert {"planday", "eitje", "shiftbase", "pennylane", "eaccounting"} <= set(POOLS)


def test_every_local_requirement_is_mounted_where_pip_installs_it(config):
    """requirements.txt installs the provider from a path (``-e ./providers/...``): the Airflow containers run pip
    from /opt/airflow, so that path must be mounted there, or every container fails at start."""
    local = [
        line.split(maxsplit=1)[1].strip()
        for line in (COMPOSE.parent / "requirements.txt").read_text().splitlines()
        if line.startswith("-e ")
    ]
    assert local, "the provider is installed from the repo"
    for name in (*RUNTIME, "airflow-init"):
        mounts = {v["target"] if isinstance(v, dict) else v.split(":")[1] for v in config["services"][name]["volumes"]}
        for path in local:
            target = "/opt/airflow/" + path.removeprefix("./")
            assert any(target == m or target.startswith(m.rstrip("/") + "/") for m in mounts), (name, path, mounts)
