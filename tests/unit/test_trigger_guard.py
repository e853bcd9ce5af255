"""tillflow.trigger_guard: a trigger of a tillflow DAG with dates the wrong way round is refused (400, naming
both fields) before Airflow sees it; everything else reaches Airflow with its body unchanged."""

from __future__ import annotations

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient


@pytest.fixture
def client():
    from tillflow.trigger_guard import TriggerGuard

    app = FastAPI()
    seen: list[dict] = []

    @app.post("/api/v2/dags/{dag_id}/dagRuns")
    async def trigger(dag_id: str, request: Request):
        body = await request.json()
        seen.append({"dag_id": dag_id, **body})
        return {"dag_id": dag_id, "conf": body.get("conf")}

    @app.get("/api/v2/dags/{dag_id}/dagRuns")
    async def runs(dag_id: str):
        return {"dag_runs": []}

    app.add_middleware(TriggerGuard)
    with TestClient(app) as c:
        c.seen = seen
        yield c


def test_dates_the_wrong_way_round_are_refused_naming_both_fields(client):
    answer = client.post(
        "/api/v2/dags/ajour_to_planday/dagRuns", json={"conf": {"date_from": "2026-11-05", "date_to": "2026-11-01"}}
    )
    assert answer.status_code == 400
    detail = answer.json()["detail"]
    assert detail.startswith("ajour_to_planday: date_to:") and "date_from" in detail
    assert client.seen == []  # Airflow never saw it: no run


@pytest.mark.parametrize(
    "conf, field",
    [
        ({"date_from": "2026-13-01"}, "date_from"),
        ({"date_to": "2026-11-01"}, "date_from"),
        ({"overwrite": "sometimes"}, "overwrite"),
        ({"date_from": "2020-01-01", "date_to": "2026-11-01"}, "date_from/date_to"),
    ],
)
def test_other_bad_params_are_refused_naming_the_field(client, conf, field):
    answer = client.post("/api/v2/dags/kassatellen_to_eitje/dagRuns", json={"conf": conf})
    assert answer.status_code == 400
    assert f"kassatellen_to_eitje: {field}" in answer.json()["detail"]


def test_a_good_trigger_reaches_airflow_with_its_body_unchanged(client):
    conf = {"accounts": ["cafe_nord"], "date_from": "2026-11-01", "date_to": "2026-11-03", "overwrite": "overwrite"}
    answer = client.post("/api/v2/dags/ajour_to_planday/dagRuns", json={"logical_date": None, "conf": conf})
    assert answer.status_code == 200 and answer.json() == {"dag_id": "ajour_to_planday", "conf": conf}
    assert client.seen == [{"dag_id": "ajour_to_planday", "logical_date": None, "conf": conf}]


def test_other_dags_and_requests_pass_untouched(client):
    bad = {"conf": {"date_from": "2026-11-05", "date_to": "2026-11-01"}}
    assert client.post("/api/v2/dags/someone_elses_dag/dagRuns", json=bad).status_code == 200
    assert client.get("/api/v2/dags/ajour_to_planday/dagRuns").status_code == 200
    assert client.post("/api/v2/dags/ajour_to_planday/dagRuns", json={}).status_code == 200  # no conf: defaults
