"""The sync-health page in a real browser: `airflow api-server` and headless Chromium (Debian's `chromium`
and `chromium-driver`, driven by Selenium).

A user logs in through the simple auth manager's own login page, lands on the health page, filters it,
opens and acknowledges an account's rejects and starts a manual sync, which Airflow's REST API records as
that user's run. Anonymous HTTP requests are refused. Screenshots are kept under ``tests/artifacts/health_ui``
(``TILLFLOW_TEST_ARTIFACTS`` to put them elsewhere; the directory is ignored by git).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
import requests
from conftest import free_port

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("TILLFLOW_TEST_ARTIFACTS", ROOT / "tests" / "artifacts")) / "health_ui"
INTEGRATION = "ajour_to_planday"
INSTALL_HINT = "install it with: sudo apt-get install -y chromium chromium-driver (Debian packages)"


def _browser_binaries() -> tuple[str, str]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.fail(f"headless Chromium and its driver are needed for this test but were not found; {INSTALL_HINT}")
    return chromium, driver


@pytest.fixture
def api_server(tmp_path, pg_url):
    """`airflow api-server` (one worker) on a fresh Airflow home with the repo's DAGs serialized into it,
    so a manual sync can create a real DAG run (no scheduler: the run stays queued)."""
    home = tmp_path / "airflow"
    home.mkdir()
    port = free_port()
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
        "AIRFLOW__API__PORT": str(port),
        "PYTHONPATH": os.pathsep.join(sys.path),
    }
    env.pop("AIRFLOW__API__BASE_URL", None)
    for args in (["db", "migrate"], ["dags", "reserialize"]):
        done = subprocess.run(
            [sys.executable, "-m", "airflow", *args], env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr[-2000:]
    log = tmp_path / "api-server.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "airflow", "api-server", "-H", "127.0.0.1", "-p", str(port), "-w", "1"],
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"{base}/api/v2/monitor/health", timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise AssertionError(f"the API server did not come up:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        password = json.loads((home / "simple_auth_manager_passwords.json.generated").read_text())["admin"]
        yield base, password
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver_path = _browser_binaries()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1600,1000",
        "--lang=en-US",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(30)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    ignore = ARTIFACTS.parent / ".gitignore"
    if not ignore.exists():
        ignore.write_text("*\n")
    try:
        yield driver
    finally:
        driver.quit()


def seed(store):
    from tillflow.records import RefItem, Reject
    from tillflow.sources.base import Window
    from tillflow.specs import AccountSettings

    def add(key, **settings):
        return store.upsert_account(
            INTEGRATION, key, name=key.replace("_", " ").title(), conn_id="c", settings=AccountSettings(**settings)
        )

    ok = add("ok_bar")
    run_id = "scheduled__2026-11-24T04:00:00+00:00"
    store.plan_activity(
        INTEGRATION,
        run_id,
        [
            {
                "account_id": ok.id,
                "flow": "revenue",
                "shard": 0,
                "window_start": date(2026, 11, 21),
                "window_end": date(2026, 11, 23),
                "mode": "keep_manual",
            }
        ],
    )
    store.activity_update(
        run_id, ok.id, "revenue", status="success", fetched=12, upserted=9, delivered=9, finished=True
    )
    store.flow_success(
        ok.id,
        "revenue",
        due_at=datetime(2026, 11, 24, 4, tzinfo=UTC),
        window=Window(date(2026, 11, 21), date(2026, 11, 23)),
        run_id=run_id,
    )
    unmapped = add("unmapped_bar")
    store.set_source_items(unmapped.id, "location", [RefItem(key="L5", name="Terrace")])
    store.set_status(unmapped.id, "needs_mapping", "unmapped location(s): L5 (Terrace)", flow="revenue")
    store.set_status(add("failing_bar").id, "failing", "Planday answered 500", flow="revenue")
    store.set_status(add("refused_bar").id, "auth_failed", "credentials refused", flow="revenue")
    add("paused_bar", active=False)
    rejecting = add("reject_bar")
    store.add_rejects(
        rejecting.id,
        "revenue",
        [Reject(reason="amount is not a number", payload={"a": "x"}, ref="L2")],
        landing_id=None,
        run_id=run_id,
    )


def test_health_page_in_a_real_browser_behind_airflows_login(store, api_server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.select import Select
    from selenium.webdriver.support.ui import WebDriverWait

    base, password = api_server
    seed(store)
    print(f"\nscreenshots: {ARTIFACTS}")

    # anonymous, over real HTTP: refused (JSON) or sent to the login page (HTML)
    assert requests.get(f"{base}/tillflow/health.json", timeout=10).status_code == 401
    assert requests.post(f"{base}/tillflow/sync.json", json={}, timeout=10).status_code == 401
    assert requests.get(f"{base}/tillflow/rejects.json?integration=x&account=y", timeout=10).status_code == 401
    page = requests.get(f"{base}/tillflow/health", allow_redirects=False, timeout=10)
    assert page.status_code == 303 and "/auth/login" in page.headers["location"]

    wait = WebDriverWait(browser, 30)

    def shot(name: str) -> None:
        browser.save_screenshot(str(ARTIFACTS / f"{name}.png"))

    def rows() -> list[tuple[str, str]]:
        return [
            (r.get_attribute("data-account"), r.get_attribute("data-status"))
            for r in browser.find_elements(By.CSS_SELECTOR, "#health tbody tr")
        ]

    # log in through Airflow's own login page, and come back to the health page
    browser.get(f"{base}/tillflow/health")
    wait.until(ec.presence_of_element_located((By.NAME, "username"))).send_keys("admin")
    browser.find_element(By.NAME, "password").send_keys(password)
    shot("01-login")
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait.until(ec.presence_of_element_located((By.ID, "health")))
    assert "/tillflow/health" in browser.current_url
    assert "Signed in as admin" in browser.page_source
    statuses = dict(rows())
    assert {k: statuses[k] for k in ("ok_bar", "unmapped_bar", "failing_bar", "refused_bar", "paused_bar")} == {
        "ok_bar": "ok",
        "unmapped_bar": "needs_mapping",
        "failing_bar": "failing",
        "refused_bar": "auth_failed",
        "paused_bar": "paused",
    }
    ok_row = browser.find_element(By.CSS_SELECTOR, 'tr[data-account="ok_bar"]')
    assert (
        ok_row.find_element(By.CSS_SELECTOR, "a.log-link")
        .get_attribute("href")
        .endswith("/dags/ajour_to_planday/runs/scheduled__2026-11-24T04%3A00%3A00%2B00%3A00/tasks/run/mapped/0")
    )
    shot("02-health")

    # filter by integration and status
    Select(browser.find_element(By.ID, "f-integration")).select_by_value(INTEGRATION)
    Select(browser.find_element(By.ID, "f-status")).select_by_value("needs_mapping")
    browser.find_element(By.ID, "apply").click()
    wait.until(ec.url_contains("status=needs_mapping"))
    assert rows() == [("unmapped_bar", "needs_mapping")]
    assert "location L5 (Terrace)" in browser.page_source
    shot("03-filtered-needs-mapping")

    # an account's rejects: see them, acknowledge them
    browser.get(f"{base}/tillflow/health?integration={INTEGRATION}")
    browser.find_element(By.CSS_SELECTOR, 'tr[data-account="reject_bar"] a.rejects').click()
    wait.until(ec.presence_of_element_located((By.ID, "rejects")))
    assert "amount is not a number" in browser.page_source
    shot("04-rejects")
    browser.find_element(By.CSS_SELECTOR, "#ack button").click()
    wait.until(ec.url_contains("acked=1"))
    assert "0 open of 1 shown" in browser.find_element(By.ID, "summary").text
    shot("05-rejects-acknowledged")

    # a manual sync for a date range: a DAG run through Airflow's REST API, as this user
    browser.get(f"{base}/tillflow/health?integration={INTEGRATION}&status=ok")
    form = browser.find_element(By.CSS_SELECTOR, 'tr[data-account="ok_bar"] form.sync')
    for name, value in (("date_from", "2026-11-01"), ("date_to", "2026-11-03")):
        field = form.find_element(By.NAME, name)
        browser.execute_script("arguments[0].value = arguments[1]", field, value)
    shot("06-sync-form")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    message = wait.until(ec.presence_of_element_located((By.ID, "message"))).text
    assert message.startswith("Started ajour_to_planday run manual__"), message
    shot("07-sync-started")
    token = requests.post(f"{base}/auth/token", json={"username": "admin", "password": password}, timeout=10).json()
    runs = requests.get(
        f"{base}/api/v2/dags/{INTEGRATION}/dagRuns",
        headers={"Authorization": f"Bearer {token['access_token']}"},
        timeout=10,
    ).json()["dag_runs"]
    (run,) = [r for r in runs if r["run_type"] == "manual"]
    assert run["conf"] == {"accounts": ["ok_bar"], "date_from": "2026-11-01", "date_to": "2026-11-03"}
    assert run["triggering_user_name"] == "admin"

    # a trigger whose dates are the wrong way round is refused before the run exists (tillflow.trigger_guard)
    refused = requests.post(
        f"{base}/api/v2/dags/{INTEGRATION}/dagRuns",
        headers={"Authorization": f"Bearer {token['access_token']}"},
        json={"logical_date": None, "conf": {"date_from": "2026-11-05", "date_to": "2026-11-01"}},
        timeout=10,
    )
    assert refused.status_code == 400, refused.text
    assert "date_to" in refused.json()["detail"] and "date_from" in refused.json()["detail"]
    after = requests.get(
        f"{base}/api/v2/dags/{INTEGRATION}/dagRuns",
        headers={"Authorization": f"Bearer {token['access_token']}"},
        timeout=10,
    ).json()["dag_runs"]
    assert len(after) == len(runs)

    # the page inside the Airflow UI (its "Sync health" menu entry)
    browser.get(f"{base}/plugin/tillflow-health")
    frame = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "iframe")))
    assert "tillflow/health" in frame.get_attribute("src")
    time.sleep(2)  # let the frame render for the screenshot
    shot("08-in-airflow-ui")
    # Airflow's own trigger dialog: dates the wrong way round are refused with the reason, and no run is made
    from selenium.common.exceptions import StaleElementReferenceException

    react = WebDriverWait(browser, 30, ignored_exceptions=(StaleElementReferenceException,))  # React re-renders

    def click(xpath: str) -> None:
        button = react.until(ec.element_to_be_clickable((By.XPATH, xpath)))
        browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", button)
        react.until(ec.element_to_be_clickable((By.XPATH, xpath))).click()

    browser.get(f"{base}/dags/{INTEGRATION}")
    click("//button[normalize-space(.)='Trigger']")
    for n, typed, value in ((1, "11052026", "2026-11-05"), (2, "11012026", "2026-11-01")):
        xpath = f"(//*[@role='dialog']//input[@type='date'])[{n}]"
        react.until(ec.element_to_be_clickable((By.XPATH, xpath))).send_keys(typed)  # as a user types, en-US
        react.until(lambda b, x=xpath, v=value: b.find_element(By.XPATH, x).get_attribute("value") == v)
    click("//*[@role='dialog']//button[normalize-space(.)='Trigger']")
    try:
        react.until(lambda b: "lies before date_from" in b.page_source)
    except Exception:
        shot("09-trigger-form-failed")
        raise
    shown = "//*[contains(text(), 'lies before date_from')]"
    reason = react.until(lambda b: b.find_element(By.XPATH, shown).text)
    assert "date_to: 2026-11-01 lies before date_from 2026-11-05" in reason  # the reason, in the dialog
    react.until(
        lambda b: b.execute_script(
            "arguments[0].scrollIntoView({block: 'center'}); return true", b.find_element(By.XPATH, shown)
        )
    )
    shot("09-trigger-form-refuses-dates")
    runs_now = requests.get(
        f"{base}/api/v2/dags/{INTEGRATION}/dagRuns",
        headers={"Authorization": f"Bearer {token['access_token']}"},
        timeout=10,
    ).json()["dag_runs"]
    assert len(runs_now) == len(runs)
    for name in ("01-login", "02-health", "03-filtered-needs-mapping", "05-rejects-acknowledged", "08-in-airflow-ui"):
        assert (ARTIFACTS / f"{name}.png").stat().st_size > 1000
