"""report.py: plan and result tables, JSON forms, progress output, masking."""

from __future__ import annotations

import datetime as dt
import io
import json
import re
from pathlib import Path
from typing import Any

from deploy_lib.apply import (
    CREATED,
    DELETED,
    FAILED,
    SKIPPED,
    UNCHANGED_STATUS,
    UPDATED,
    ApplyResult,
    Result,
)
from deploy_lib.models import MANAGED_BY_TAG, DeploymentSpec, FlowMetadata, Masker
from deploy_lib.plan import Change, FieldChange, Plan, make_plan
from deploy_lib.report import (
    ApplyProgress,
    Output,
    format_field_change,
    format_plan,
    format_plan_markdown,
    format_results,
    plan_json,
    progress_line,
    results_json,
    to_json,
    use_colour,
)

ENV = "staging"
SECRET = "s3cr3t-token-value"
CLOCK = dt.datetime(2026, 11, 26, 6, 30, 1, tzinfo=dt.timezone.utc)


def body(flow: str, **overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": f"{flow}-python",
        "flow_name": flow,
        "entrypoint": f"flows/{flow}.py:main",
        "work_pool_name": "staging-agent-pool",
        "tags": [MANAGED_BY_TAG, f"env:{ENV}", "runtime:python"],
        "parameters": {},
        "job_variables": {"env": {"PREFECT_LOGGING_LEVEL": "INFO"}},
        "schedules": [],
    }
    data.update(overrides)
    return data


def spec(data: dict[str, Any]) -> DeploymentSpec:
    flow = FlowMetadata(
        name=data["flow_name"], function="main", path=f"flows/{data['flow_name']}.py"
    )
    return DeploymentSpec(type="python", env=ENV, flow=flow, body=data)


def live(data: dict[str, Any], id_: str) -> dict[str, Any]:
    return {**data, "id": id_}


def sample_plan() -> Plan:
    desired = [
        spec(body("new-flow")),
        spec(body("etl", job_variables={"env": {"PREFECT_LOGGING_LEVEL": "DEBUG"}})),
        spec(body("same")),
    ]
    current = [
        live(body("etl"), "id-etl"),
        live(body("same"), "id-same"),
        live(body("retired"), "id-retired"),
    ]
    return make_plan(desired, current, ENV)


def sample_result() -> ApplyResult:
    return ApplyResult(
        env=ENV,
        results=(
            Result("create", "new-flow/new-flow-python", "python", CREATED, "id-1", duration=0.123),
            Result("update", "etl/etl-python", "python", UPDATED, "id-etl", duration=0.045),
            Result("unchanged", "same/same-python", "python", UNCHANGED_STATUS, "id-same"),
            Result("delete", "retired/retired-python", "python", SKIPPED, "id-retired"),
            Result(
                "create",
                "broken/broken-python",
                "python",
                FAILED,
                error=f"HTTP 422: job variable rejected (token {SECRET})\nsecond line",
                duration=0.0101,
            ),
        ),
    )


def test_the_plan_table_shows_each_action_and_the_field_diffs() -> None:
    text = format_plan(sample_plan(), prune=False)

    assert text.splitlines() == [
        "Plan for env 'staging': 1 to create, 1 to update, 1 unchanged, 1 to delete",
        "  ~ update     etl/etl-python            python",
        '      job_variables.env.PREFECT_LOGGING_LEVEL: "INFO" -> "DEBUG"',
        "  + create     new-flow/new-flow-python  python",
        "  - delete     retired/retired-python    python  (kept: deploy with --prune to delete it)",
        "  = unchanged  same/same-python          python",
    ]


def test_the_plan_table_can_leave_out_unchanged_deployments_and_the_prune_note() -> None:
    text = format_plan(sample_plan(), prune=True, show_unchanged=False)

    assert "same/same-python" not in text
    assert "1 unchanged" in text
    assert "--prune" not in text
    assert "  - delete     retired/retired-python    python" in text


def test_a_plan_without_changes_says_so_in_one_line() -> None:
    plan = make_plan([spec(body("same"))], [live(body("same"), "id")], ENV)

    assert format_plan(plan) == (
        "No changes for env 'staging': 0 to create, 0 to update, 1 unchanged, 0 to delete."
    )


def test_a_secret_in_a_diff_is_masked_by_key_name_and_by_value() -> None:
    plan = make_plan(
        [
            spec(
                body(
                    "etl",
                    job_variables={
                        "env": {"GIT_TOKEN": "new-token-1234", "URL": f"https://x:{SECRET}@host"}
                    },
                )
            )
        ],
        [live(body("etl", job_variables={"env": {"GIT_TOKEN": "old-token-1234"}}), "id")],
        ENV,
    )
    masker = Masker([SECRET])

    text = format_plan(plan, masker)
    data = to_json(plan_json(plan, masker))

    for output in (text, data):
        assert SECRET not in output
        assert "new-token-1234" not in output and "old-token-1234" not in output
    assert 'job_variables.env.GIT_TOKEN: "****" -> "****"' in text
    assert 'job_variables.env.URL: (none) -> "https://****@host"' in text
    diff = json.loads(data)["changes"][0]["diff"]
    assert {"path": "job_variables.env.GIT_TOKEN", "old": "****", "new": "****", "drift": False} in diff


def test_long_values_are_truncated() -> None:
    change = FieldChange("parameters.query", "a" * 200, "short")

    line = format_field_change(change, max_value=20)

    assert line == 'parameters.query: "aaaaaaaaaaaaaaaa... -> "short"'


def test_schedules_in_a_diff_are_shown_as_short_descriptions() -> None:
    change = FieldChange(
        "schedules",
        [{"schedule": {"cron": "0 6 * * *", "timezone": "UTC"}, "parameters": {}, "slug": None}],
        [
            {"schedule": {"interval": 3600.0, "timezone": "UTC"}, "parameters": {}, "slug": None},
            {
                "schedule": {"rrule": "FREQ=DAILY", "timezone": "Europe/Berlin"},
                "parameters": {"x": 1},
                "slug": "daily",
            },
        ],
    )

    assert format_field_change(change) == (
        'schedules: [cron 0 6 * * * UTC] -> [every 3600s UTC; rrule FREQ=DAILY Europe/Berlin with {"x": 1} [daily]]'
    )


def test_plan_json_has_env_changes_and_summary() -> None:
    data = json.loads(to_json(plan_json(sample_plan())))

    assert data["env"] == ENV
    assert data["summary"] == {
        "create": 1, "update": 1, "unchanged": 1, "delete": 1, "conflict": 0, "rename": 0,
    }
    assert [(c["action"], c["deployment"], c["id"]) for c in data["changes"]] == [
        ("update", "etl/etl-python", "id-etl"),
        ("create", "new-flow/new-flow-python", None),
        ("delete", "retired/retired-python", "id-retired"),
        ("unchanged", "same/same-python", "id-same"),
    ]
    assert data["changes"][0]["diff"] == [
        {"path": "job_variables.env.PREFECT_LOGGING_LEVEL", "old": "INFO", "new": "DEBUG", "drift": False}
    ]


def test_the_results_table_counts_each_status_and_lists_failures_masked() -> None:
    text = format_results(sample_result(), Masker([SECRET]))

    assert text.splitlines() == [
        "Results for env 'staging':",
        "  created        1",
        "  updated        1",
        "  unchanged      1",
        "  deleted        0",
        "  skipped        1  (deletes kept: deploy with --prune to delete them)",
        "  failed         1",
        "  conflict       0",
        "Failed (1):",
        "  - broken/broken-python: HTTP 422: job variable rejected (token ****)",
        "      second line",
    ]


def test_results_json_has_one_record_per_deployment_and_a_summary() -> None:
    data = json.loads(to_json(results_json(sample_result(), Masker([SECRET]))))

    assert [r["deployment"] for r in data["results"]] == [
        "new-flow/new-flow-python",
        "etl/etl-python",
        "same/same-python",
        "retired/retired-python",
        "broken/broken-python",
    ]
    assert data["summary"] == {
        CREATED: 1,
        UPDATED: 1,
        UNCHANGED_STATUS: 1,
        DELETED: 0,
        SKIPPED: 1,
        FAILED: 1,
        "conflict": 0,
    }
    assert data["results"][0] == {
        "deployment": "new-flow/new-flow-python",
        "type": "python",
        "action": "create",
        "status": CREATED,
        "id": "id-1",
        "error": None,
        "duration_ms": 123.0,
    }
    assert SECRET not in json.dumps(data)
    assert "****" in data["results"][4]["error"]


def test_progress_lines_are_plain_and_timestamped_when_not_a_terminal() -> None:
    stream = io.StringIO()

    with ApplyProgress(
        5, tty=False, stream=stream, masker=Masker([SECRET]), clock=lambda: CLOCK
    ) as progress:
        for item in sample_result().results:
            progress(item)

    assert progress.done == 5
    assert stream.getvalue().splitlines() == [
        "2026-11-26T06:30:01Z created new-flow/new-flow-python (123 ms)",
        "2026-11-26T06:30:01Z updated etl/etl-python (45 ms)",
        "2026-11-26T06:30:01Z unchanged same/same-python",
        "2026-11-26T06:30:01Z skipped retired/retired-python (kept: deploy with --prune to delete it)",
        "2026-11-26T06:30:01Z failed broken/broken-python (10 ms): "
        "HTTP 422: job variable rejected (token ****) second line",
    ]
    assert "\x1b[" not in stream.getvalue()


def test_a_progress_line_is_stamped_in_utc() -> None:
    berlin = dt.datetime(2026, 11, 26, 7, 30, 1, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    item = Result("delete", "a/a-python", "python", DELETED, "id", duration=0.002)

    assert progress_line(item, now=berlin) == "2026-11-26T06:30:01Z deleted a/a-python (2 ms)"


def test_a_terminal_gets_a_progress_bar_and_the_failures_above_it() -> None:
    stream = io.StringIO()

    with ApplyProgress(
        5, tty=True, stream=stream, masker=Masker([SECRET]), clock=lambda: CLOCK
    ) as progress:
        for item in sample_result().results:
            progress(item)

    out = stream.getvalue()
    assert "\x1b[" in out, "rich writes terminal control sequences"
    assert "deploying" in out
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out)
    assert "5/5" in plain
    assert "failed broken/broken-python" in plain
    assert "created new-flow/new-flow-python" not in plain, "successes only move the bar"
    assert SECRET not in out


def test_a_change_line_uses_the_plan_objects_only() -> None:
    plan = Plan(env=ENV, changes=(Change("delete", "x/x-docker", None, live_id="id-x"),))

    assert format_plan(plan).splitlines()[1] == "  - delete     x/x-docker  -"


# -- Output: the one place that writes ----------------------------------------------------


def output(tmp_path: Any = None, **options: Any) -> tuple[Output, io.StringIO, io.StringIO]:
    stdout, stderr = io.StringIO(), io.StringIO()
    log = tmp_path / "deploy.log" if tmp_path is not None else None
    out = Output(masker=Masker([SECRET]), log_file=log, stdout=stdout, stderr=stderr, **options)
    return out, stdout, stderr


def test_output_masks_every_line_and_logs_it_stamped(tmp_path: Any) -> None:
    out, stdout, stderr = output(tmp_path)

    out.echo(f"token is {SECRET}\nsecond line")
    out.warn(f"careful with {SECRET}")

    assert stdout.getvalue() == "token is ****\nsecond line\n"
    assert stderr.getvalue() == "warning: careful with ****\n"
    logged = (tmp_path / "deploy.log").read_text().splitlines()
    assert [line.split(" ", 1)[1] for line in logged] == [
        "token is ****",
        "second line",
        "warning: careful with ****",
    ]
    assert all(re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ ", line) for line in logged)
    assert SECRET not in (tmp_path / "deploy.log").read_text()


def test_output_shows_each_warning_once() -> None:
    out, _, stderr = output()

    out.warn_all(["a", "b", "a"])
    out.warn("b")

    assert stderr.getvalue() == "warning: a\nwarning: b\n"


def test_output_learns_secrets_as_environments_load() -> None:
    out, stdout, _ = output()
    out.learn(["later-secret-1234"])

    out.echo("later-secret-1234")

    assert stdout.getvalue() == "****\n"


def test_output_raw_prints_what_was_asked_for_and_logs_nothing(tmp_path: Any) -> None:
    out, stdout, _ = output(tmp_path)

    out.raw(f"shown {SECRET}")

    assert stdout.getvalue() == f"shown {SECRET}\n"
    assert not (tmp_path / "deploy.log").exists()


def test_the_progress_bar_closes_when_the_apply_fails(mocker: Any) -> None:
    out, _, _ = output()
    closed = mocker.spy(ApplyProgress, "__exit__")

    try:
        with out.progress(sample_plan(), tty=True) as on_result:
            on_result(sample_result().results[0])
            raise RuntimeError("the apply broke")
    except RuntimeError:
        pass

    assert closed.call_count == 1


# -- conflicts, drift, renames, markdown and colour ----------------------------------------


def ownership_plan() -> Plan:
    s = spec(body("a"))
    return Plan(
        env=ENV,
        changes=(
            Change("conflict", "a/a-python", "python", s, "id-a", owner="not managed by this project"),
            Change(
                "update", "b/b-python", "python", s, "id-b",
                diff=(FieldChange("paused", False, True), FieldChange("concurrency_limit", 2, 3)),
                body={}, drift=("paused",),
            ),
            Change("rename", "c/c-new", "python", s, "id-c", body={}, renamed_from="c/c-old"),
        ),
    )


def test_the_plan_names_conflicts_drift_and_renames() -> None:
    text = format_plan(ownership_plan(), prune=False)

    assert text.splitlines()[0] == (
        "Plan for env 'staging': 0 to create, 1 to update, 0 unchanged, 0 to delete, "
        "1 to rename, 1 in conflict, 1 with drift"
    )
    assert "  ! conflict   a/a-python  python  (not managed by this project; left alone" in text
    assert "(drift: paused changed on the server since the last deploy)" in text
    assert "      paused: false -> true  [drift]" in text
    assert "      concurrency_limit: 2 -> 3\n" in text + "\n"  # a change in code: no mark
    assert "  > rename     c/c-new     python  (was c/c-old; the old one is kept" in text


def test_plan_json_marks_each_drifted_field() -> None:
    data = plan_json(ownership_plan())
    update = next(c for c in data["changes"] if c["action"] == "update")

    assert update["drift"] == ["paused"]
    assert [(d["path"], d["drift"]) for d in update["diff"]] == [
        ("paused", True),
        ("concurrency_limit", False),
    ]
    conflict = next(c for c in data["changes"] if c["action"] == "conflict")
    assert conflict["owner"] == "not managed by this project"


def test_the_markdown_plan_is_a_summary_and_a_table_with_the_diffs_folded() -> None:
    text = format_plan_markdown(ownership_plan())

    lines = text.splitlines()
    assert lines[0].startswith("### Plan for `staging`: 0 to create, 1 to update")
    assert "| | deployment | type | what |" in lines
    assert "| `!` conflict | `a/a-python` | python | not managed by this project |" in lines
    assert "| `~` update | `b/b-python` | python | 2 field(s); drift: paused |" in lines
    assert "| `>` rename | `c/c-new` | python | was `c/c-old` |" in lines
    assert "<details><summary>Field changes</summary>" in lines
    assert "- `paused: false -> true` (drift)" in lines


def test_colour_only_on_a_terminal_and_never_with_no_color(monkeypatch: Any) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("NO_COLOR", raising=False)
    assert use_colour(Tty()) is True
    assert use_colour(io.StringIO()) is False
    assert use_colour(Tty(), no_color=True) is False
    monkeypatch.setenv("NO_COLOR", "1")
    assert use_colour(Tty()) is False
    painted = format_plan(ownership_plan(), colour=True)
    assert "\033[1;31m  ! conflict" in painted and "\033[35m  ~ update" in painted
    assert "\033[" not in format_plan(ownership_plan())


def test_the_log_file_gets_no_colour_codes(tmp_path: Any) -> None:
    out, _, _ = output(tmp_path)

    out.echo("\033[32m  + create     x/x\033[0m")

    assert (tmp_path / "deploy.log").read_text().split(" ", 1)[1] == "  + create     x/x\n"


def test_confirm_goes_on_only_for_yes() -> None:
    for answer, expected in [("y\n", True), ("yes\n", True), ("n\n", False), ("", False)]:
        out, stdout, _ = output()
        assert out.confirm(["delete 1 deployment(s): a/a"], stdin=io.StringIO(answer)) is expected
        assert "  - delete 1 deployment(s): a/a\nGo on? [y/N] " in stdout.getvalue()


def test_the_log_file_folder_is_made_and_the_file_is_private(tmp_path: Any) -> None:
    log = tmp_path / "logs" / "deploy.log"  # the README's cron line, on a fresh clone
    out = Output(log_file=log, stdout=io.StringIO(), stderr=io.StringIO())

    out.echo("first")

    assert log.read_text().endswith(" first\n")
    assert log.stat().st_mode & 0o077 == 0


def test_a_line_already_stamped_is_not_stamped_twice(tmp_path: Any) -> None:
    out, _, _ = output(tmp_path)

    out.log("2026-12-01T02:15:00Z created a/a (12 ms)")

    assert (tmp_path / "deploy.log").read_text() == "2026-12-01T02:15:00Z created a/a (12 ms)\n"


def test_a_log_file_that_cannot_be_written_is_said_once_and_the_run_goes_on(tmp_path: Any) -> None:
    (tmp_path / "deploy.log").mkdir()  # a folder where the file should be
    out, stdout, stderr = output(tmp_path)

    out.echo("one")
    out.echo("two")

    assert stdout.getvalue() == "one\ntwo\n"
    assert stderr.getvalue().count("cannot write the log file") == 1


class _GoneReader(io.StringIO):
    """A stdout whose reader went away (`invoke deploy | head -1`) after ``lines``."""

    def __init__(self, lines: int) -> None:
        super().__init__()
        self.left = lines

    def write(self, text: str) -> int:
        if self.left <= 0:
            raise BrokenPipeError(32, "Broken pipe")
        self.left -= 1
        return super().write(text)


def test_a_closed_stdout_is_given_up_once_and_the_run_goes_on(tmp_path: Path) -> None:
    stdout, stderr = _GoneReader(lines=1), io.StringIO()
    out = Output(stdout=stdout, stderr=stderr, log_file=tmp_path / "run.log")

    for n in range(5):
        out.echo(f"line {n}")
    out.warn("still heard on stderr")

    assert stdout.getvalue() == "line 0\n"
    assert stderr.getvalue() == (
        "warning: stdout was closed; the run goes on without printing there\n"
        "warning: still heard on stderr\n"
    )
    logged = (tmp_path / "run.log").read_text()
    assert all(f"line {n}" in logged for n in range(5))
    assert "stdout was closed" in logged


def test_a_secret_moved_into_a_secret_block_shows_where_it_is_kept_never_its_value() -> None:
    reference = "{{ prefect.blocks.secret.deploy-lib-shop-staging-git-token }}"
    plan = make_plan(
        [spec(body("etl", job_variables={"env": {"GIT_TOKEN": reference}}))],
        [live(body("etl", job_variables={"env": {"GIT_TOKEN": "old-token-1234"}}), "id")],
        ENV,
    )

    text = format_plan(plan, Masker())

    assert f'job_variables.env.GIT_TOKEN: "****" -> "{reference}"' in text
    assert "old-token-1234" not in text
