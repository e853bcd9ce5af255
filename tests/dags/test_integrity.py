"""DAG integrity and policy: every DAG file imports cleanly, quickly, and follows the house rules."""

from __future__ import annotations

from pathlib import Path

import pytest
from tillflow.specs import TAG_PREFIXES, load_spec

ROOT = Path(__file__).resolve().parents[2]
DAG_FILES = sorted((ROOT / "dags").glob("*.py"))
MAX_PARSE_SECONDS = 1.0


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(ROOT / "dags"))


def test_there_are_dag_files():
    assert DAG_FILES, "no DAG files found"


def _spec_dag_ids(path):
    yaml_path = path.with_suffix(".yaml")
    return set(load_spec(yaml_path).dags()) if yaml_path.exists() else {path.stem}


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}
    for path in DAG_FILES:  # every DAG of every spec (one per flow schedule) is found
        assert _spec_dag_ids(path) <= set(dagbag.dag_ids), path.name


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_parse_time_under_one_second(dagbag, path):
    stats = {Path(s.file).name: s for s in dagbag.dagbag_stats}
    duration = stats[path.name].duration
    seconds = duration.total_seconds() if hasattr(duration, "total_seconds") else float(duration)
    print(f"{path.name}: parsed in {seconds:.3f} s")
    assert seconds < MAX_PARSE_SECONDS


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_dag_file_has_a_spec_and_safe_mode_words(path):
    text = path.read_text()
    assert "airflow" in text.lower() and "dag" in text.lower(), "safe-mode parsing would skip this file"
    if path.with_suffix(".yaml").exists():
        assert load_spec(path.with_suffix(".yaml")).integration == path.stem


def test_tags_come_from_the_fixed_set(dagbag):
    for dag_id, dag in dagbag.dags.items():
        assert dag.tags, dag_id
        for tag in dag.tags:
            assert tag == "tillflow" or tag.startswith(TAG_PREFIXES), f"{dag_id}: tag {tag!r}"
        if dag_id != "tillflow_maintenance":  # integrations name both ends
            assert any(t.startswith("source:") for t in dag.tags) and any(t.startswith("target:") for t in dag.tags)


def test_every_task_retries_and_alerts(dagbag):
    from tillflow.notify import FailureEmail

    for dag_id, dag in dagbag.dags.items():
        assert dag.doc_md and "Runbook" in dag.doc_md, f"{dag_id}: doc_md needs a runbook"
        assert dag.catchup is False
        for task in dag.tasks:
            assert task.retries >= 1, f"{dag_id}.{task.task_id} has no retries"
            callbacks = task.on_failure_callback or []
            callbacks = callbacks if isinstance(callbacks, list) else [callbacks]
            alerts = any(isinstance(c, FailureEmail) for c in callbacks)
            if task.task_id == "run":  # one e-mail per run: report names every failed account
                assert not alerts, f"{dag_id}.run would e-mail once per shard"
                report = dag.get_task("report")
                assert report.trigger_rule == "all_done" and "run" in report.upstream_task_ids
            else:
                assert alerts, f"{dag_id}.{task.task_id} sends no alert"


def test_schedule_is_a_pinned_cron_timetable(dagbag):
    from airflow.timetables.trigger import CronTriggerTimetable

    dag = dagbag.dags["ajour_to_planday"]
    assert isinstance(dag.timetable, CronTriggerTimetable)
    assert dag.timetable._expression == "0 5-23 * * *"


def test_accounts_run_in_one_mapped_task_over_shards(dagbag):
    dag = dagbag.dags["ajour_to_planday"]
    assert {t.task_id for t in dag.tasks} == {"plan", "run", "report"}
    assert dag.get_task("report").trigger_rule == "all_done"
    assert dag.get_task("run").map_index_template == "{{ tillflow_label }}"
    assert dag.max_active_runs == 1
