"""Retraining triggered by monitoring (retrain.py) as a table of situations: pure, no I/O."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from clock import at, ts
from serin.operator import retrain
from serin.operator.actions import ClearAnnotation, CreateRetrainJob, Emit
from serin.operator.observations import JobObservation
from serin.operator.spec import ModelSpec, parse_spec
from serin.operator.status import Canary, HistoryEntry, Monitoring, Outcome, SignalStatus, Status, Version

TEMPLATE = {"spec": {"template": {"spec": {"serviceAccountName": "fraud-trainer", "containers": [{"name": "train", "image": "team/trainer:1",
                                                            "env": [{"name": "SERIN_MODEL", "value": "spoofed"},
                                                                    {"name": "EPOCHS", "value": "3"}]}]}}}}


def spec(**retrain_spec: Any) -> ModelSpec:
    return parse_spec({"source": {"uri": "s3://m/v1.joblib", "sampleUri": "s3://m/s.csv"},
                       "serving": {"capture": {"share": 0.1, "uri": "s3://capture/c",
                                               "s3": {"endpoint": "http://s3.local:7070"}}},
                       "monitoring": {"retrain": {"template": TEMPLATE, "for": "30m", "cooldown": "24h"}
                                      | retrain_spec}})


def serving(alarm_since: float | None = 0, signal: str = "inputDrift", episode: int = 1,
            dry_run: bool | None = None) -> Status:
    signals = (SignalStatus("errorRate", "Watching", ts(-3600)),)
    if alarm_since is not None:
        signals += (SignalStatus(signal, "Alarm", ts(alarm_since), evidence=1.2, episode=episode, dryRun=dry_run),)
    return Status(observedGeneration=4, stable=Version(4, "k4", "s3://store/4", revision="fraud-predictor-00004",
                                                       sourceUri="s3://m/v1.joblib", sampleUri="s3://m/s.csv"),
                  stableConfirmed=True,
                  monitoring=Monitoring("fraud-predictor-00004", 4, ts(-7200), ts(0), signals=signals))


def run(s: Status, model_spec: ModelSpec | None = None, now: float = 1800, job: JobObservation | None = None,
        annotations: dict[str, str] | None = None, generation: int = 4):
    return retrain.decide(model_spec or spec(), s, job, annotations or {}, "fraud", "team-a", generation, at(now))


def reasons(actions: list) -> list[str]:
    return [a.reason for a in actions if isinstance(a, Emit)]


def test_an_alarm_that_lasts_for_starts_one_job_with_the_window_and_where_the_traffic_is() -> None:
    assert run(serving(), now=1799) == (None, []), "not before `for`"
    r, actions = run(serving(), now=1800)
    assert r is not None and r.state == retrain.RUNNING and r.signal == "inputDrift" and r.generation == 4
    assert r.job.startswith("fraud-retrain-") and len(r.job) <= 63
    assert (r.windowStart, r.windowEnd, r.triggeredAt) == (ts(1800 - 7 * 86400), ts(1800), ts(1800))
    assert reasons(actions) == ["RetrainTriggered"]
    [create] = [a for a in actions if isinstance(a, CreateRetrainJob)]
    env = dict(create.env)
    assert create.name == r.job and env["SERIN_MODEL"] == "fraud" and env["SERIN_SIGNAL"] == "inputDrift"
    assert env["SERIN_WINDOW_START"] == r.windowStart and env["SERIN_CAPTURE_URI"] == "s3://capture/c"
    assert env["SERIN_CAPTURE_ENDPOINT"] == "http://s3.local:7070" and env["SERIN_SOURCE_URI"] == "s3://m/v1.joblib"
    assert retrain.next_due(spec(), serving(), at(0)) == 1800.05


def test_the_trainer_is_told_the_serving_versions_artifact_not_the_one_the_spec_names_now() -> None:
    # The spec names version 5, rolled back: the serving version 4 is what was trained and drifted.
    later = parse_spec({"source": {"uri": "s3://m/v5.onnx", "sampleUri": "s3://m/s5.csv"},
                        "monitoring": {"retrain": {"template": TEMPLATE, "for": "30m"}}})

    def told(s: Status, model_spec: ModelSpec) -> tuple[str, str]:
        [create] = [a for a in run(s, model_spec)[1] if isinstance(a, CreateRetrainJob)]
        return dict(create.env)["SERIN_SOURCE_URI"], dict(create.env)["SERIN_SAMPLE_URI"]

    assert told(serving(), later) == ("s3://m/v1.joblib", "s3://m/s.csv")
    # A version recorded before Serin kept its source: the spec's only while the spec names it.
    unrecorded = serving().evolve(stable=Version(4, "k4", "s3://store/4", revision="fraud-predictor-00004"))
    assert told(unrecorded, later) == ("", "")
    same = unrecorded.evolve(stable=replace(unrecorded.stable, versionKey=later.version_key))
    assert told(same, later) == ("s3://m/v5.onnx", "s3://m/s5.csv")


def test_only_the_conditions_named_and_never_a_dry_run_signal() -> None:
    only_decay = spec(conditions=["PerformanceDegraded"])
    assert run(serving(), only_decay) == (None, [])
    r, _ = run(serving(signal="accuracy"), only_decay)
    assert r is not None and r.signal == "accuracy"
    assert run(serving(dry_run=True)) == (None, [])


def test_a_kill_between_deciding_and_creating_creates_the_same_job_once() -> None:
    r, _ = run(serving())
    assert r is not None
    # The next tick (another operator) reads status.retrain: the Job is not there yet.
    r2, actions = run(serving().evolve(retrain=r), now=1810, job=JobObservation(exists=False))
    assert r2 == r and [a.name for a in actions if isinstance(a, CreateRetrainJob)] == [r.job]
    assert reasons(actions) == [], "told once, when decided"
    seen, actions = run(serving().evolve(retrain=r), now=1820, job=JobObservation(exists=True))
    assert seen is not None and seen.jobSeen and actions == []


def test_a_job_deleted_after_it_was_seen_is_not_created_again() -> None:
    r, _ = run(serving())
    assert r is not None
    r = replace(r, jobSeen=True)
    after, actions = run(serving().evolve(retrain=r), job=JobObservation(exists=False))
    assert after is not None and after.state == retrain.FAILED and reasons(actions) == ["RetrainFailed"]
    assert not any(isinstance(a, CreateRetrainJob) for a in actions)


def test_the_jobs_end_is_told_once() -> None:
    r, _ = run(serving())
    assert r is not None
    failed, actions = run(serving().evolve(retrain=r), job=JobObservation(True, failed=True,
                                                                           reason="DeadlineExceeded: too long"))
    assert failed is not None and failed.state == retrain.FAILED and reasons(actions) == ["RetrainFailed"]
    assert "DeadlineExceeded: too long" in actions[0].message
    ok, actions = run(serving().evolve(retrain=r), job=JobObservation(True, succeeded=True), generation=5)
    assert ok is not None and ok.state == retrain.SUCCEEDED and "generation 5" in actions[0].message
    same, actions = run(serving().evolve(retrain=r), job=JobObservation(True, succeeded=True), generation=4)
    assert same is not None and "did not change the Model" in actions[0].message
    assert run(serving().evolve(retrain=ok), job=None) == (ok, []), "nothing more for that alarm"


def test_no_storm_one_retraining_per_alarm_and_a_cooldown_between_two() -> None:
    """A retrained version rolled back leaves the same serving version and alarm: nothing more."""
    r, _ = run(serving())
    assert r is not None
    done = replace(r, state=retrain.SUCCEEDED, jobSeen=True)
    assert run(serving().evolve(retrain=done), now=90000) == (done, [])
    # A new episode of the alarm within the cooldown: told once, acted on when the cooldown ends.
    episode2 = serving(alarm_since=3600, episode=2).evolve(retrain=done)
    skipped, actions = run(episode2, now=3600 + 1800)
    assert skipped is not None and reasons(actions) == ["RetrainSkipped"] and "cooldown until" in actions[0].message
    assert run(episode2.evolve(retrain=skipped), now=3600 + 1900) == (skipped, [])
    assert retrain.next_due(spec(), episode2.evolve(retrain=skipped), at(3600 + 1900)) == 1800 + 86400 - 5500 + 0.05
    second, actions = run(episode2.evolve(retrain=skipped), now=1800 + 86400)
    assert second is not None and second.episode == 2 and second.job != r.job and reasons(actions) == ["RetrainTriggered"]


def test_a_new_version_on_its_way_or_a_silence_holds_it() -> None:
    s = serving()
    canary = s.evolve(canary=Canary(5, "k5", "s3://store/5"))
    assert run(canary) == (None, [])
    assert retrain.next_due(spec(), canary, at(1900)) is None, "held by the rollout: no spinning"
    silenced = s.evolve(monitoring=replace(s.monitoring, silencedUntil=ts(5000)))  # type: ignore[type-var]
    assert run(silenced) == (None, [])


def test_manual_approval_names_the_job_and_still_waits_for_a_rollout_or_a_silence() -> None:
    manual = spec(approval="Manual")
    r, actions = run(serving(), manual)
    assert r is not None and r.state == retrain.AWAITING and reasons(actions) == ["RetrainSkipped"]
    assert "serin approve fraud -n team-a --generation 4" in actions[0].message
    assert not any(isinstance(a, CreateRetrainJob) for a in actions)
    s = serving().evolve(retrain=r)
    wrong, actions = run(s, manual, annotations={retrain.APPROVE_ANNOTATION: "fraud-retrain-00000000"})
    assert wrong == r and reasons(actions) == ["RetrainSkipped"]
    assert ClearAnnotation(retrain.APPROVE_ANNOTATION, "fraud-retrain-00000000") in actions
    # Approved while a canary is on its way: it waits for it, approved.
    held, actions = run(s.evolve(canary=Canary(5, "k5", "s3://store/5")), manual,
                        annotations={retrain.APPROVE_ANNOTATION: r.job})
    assert held is not None and held.state == retrain.AWAITING and held.approved
    assert not any(isinstance(a, CreateRetrainJob) for a in actions) and "a new version is on its way" in held.message
    approved, actions = run(s.evolve(retrain=held), manual, now=4000)
    assert approved is not None and approved.state == retrain.RUNNING and reasons(actions) == ["RetrainTriggered"]
    assert approved.triggeredAt == ts(4000), "the cooldown counts from the start"
    assert [a.name for a in actions if isinstance(a, CreateRetrainJob)] == [r.job]
    # The alarm ends before anyone approves: dropped, told, remembered.
    dropped, actions = run(serving(alarm_since=None).evolve(retrain=r), manual)
    assert dropped is not None and dropped.state == retrain.DROPPED and reasons(actions) == ["RetrainSkipped"]
    assert "alarm ended" in actions[0].message
    assert run(serving(alarm_since=None).evolve(retrain=dropped), manual) == (dropped, [])


def test_a_refused_job_or_a_retraining_removed_before_its_job_ends_as_failed() -> None:
    r, _ = run(serving())
    assert r is not None
    refused, actions = run(serving().evolve(retrain=r), job=JobObservation(False, refused="admission denied"))
    assert refused is not None and refused.state == retrain.FAILED and reasons(actions) == ["RetrainFailed"]
    assert not any(isinstance(a, CreateRetrainJob) for a in actions) and "admission denied" in actions[0].message
    removed = parse_spec({"source": {"uri": "s3://m/v1.joblib", "sampleUri": "s3://m/s.csv"}})
    gone, actions = run(serving().evolve(retrain=r), removed, job=JobObservation(False))
    assert gone is not None and gone.state == retrain.FAILED and "removed" in gone.message


def test_a_retrained_version_rolled_back_is_not_retrained_again_for_that_version() -> None:
    """Knative restores the stable under a new revision name after a rollback: monitoring starts
    again and its alarm is a new episode; still no second retraining of that version for it."""
    r, _ = run(serving())
    assert r is not None
    done = replace(r, state=retrain.SUCCEEDED, jobSeen=True)
    renamed = serving(alarm_since=100000).evolve(retrain=done, history=(
        HistoryEntry(5, Outcome.ROLLED_BACK, ts(3000), "analysis failed"),))
    renamed = renamed.evolve(monitoring=replace(renamed.monitoring, revision="fraud-predictor-00006",
                                                startedAt=ts(99000)))  # type: ignore[type-var]
    skipped, actions = run(renamed, now=100000 + 1800 + 86400)
    assert skipped is not None and reasons(actions) == ["RetrainSkipped"] and "was rolled back" in actions[0].message
    assert not any(isinstance(a, CreateRetrainJob) for a in actions)
    assert run(renamed.evolve(retrain=skipped), now=100000 + 1800 + 86500) == (skipped, [])


def test_only_the_version_the_trainer_made_being_rolled_back_stops_retraining() -> None:
    r, _ = run(serving())
    assert r is not None
    # The Job succeeds after its trainer changed the Model (generation 4 -> 5): that is its version.
    done, _ = run(serving().evolve(retrain=replace(r, jobSeen=True)), now=1900,
                  job=JobObservation(r.job, succeeded=True), generation=5)
    assert done is not None and done.state == retrain.SUCCEEDED and done.producedGeneration == 5
    later = serving(alarm_since=100000)
    later = later.evolve(monitoring=replace(later.monitoring, startedAt=ts(99000)))  # type: ignore[type-var]
    # A user's generation 6 rolled back says nothing of the retraining: the next alarm retrains.
    theirs = later.evolve(retrain=done, history=(HistoryEntry(6, Outcome.ROLLED_BACK, ts(3000), "analysis failed"),))
    again, actions = run(theirs, now=100000 + 1800 + 86400, generation=6)
    assert again is not None and again.job != r.job and reasons(actions) == ["RetrainTriggered"]
    ours = later.evolve(retrain=done, history=(HistoryEntry(5, Outcome.ROLLED_BACK, ts(3000), "analysis failed"),))
    assert reasons(run(ours, now=100000 + 1800 + 86400, generation=6)[1]) == ["RetrainSkipped"]


def test_a_retraining_recorded_without_its_monitorings_start_keeps_its_alarm() -> None:
    # Written by a Serin before retrainings kept monitoringStartedAt: still this alarm, not a new one.
    r, _ = run(serving(), model_spec=spec(approval="Manual"))
    assert r is not None and r.state == retrain.AWAITING
    old = replace(r, monitoringStartedAt="")
    kept, actions = run(serving().evolve(retrain=old), model_spec=spec(approval="Manual"), now=1900)
    assert kept == old and actions == []
    done = replace(old, state=retrain.FAILED, jobSeen=True, triggeredAt=ts(1800))
    assert run(serving().evolve(retrain=done), now=1800 + 86400 + 1) == (done, [])


def test_a_restarted_monitoring_counts_its_alarms_anew() -> None:
    r, _ = run(serving())
    assert r is not None
    done = replace(r, state=retrain.FAILED, jobSeen=True)
    restarted = serving(alarm_since=100000)
    restarted = restarted.evolve(retrain=done, monitoring=replace(restarted.monitoring, startedAt=ts(99000)))  # type: ignore[type-var]
    again, actions = run(restarted, now=100000 + 1800 + 86400)
    assert again is not None and again.job != r.job and reasons(actions) == ["RetrainTriggered"]


def test_the_job_is_the_users_template_with_serins_labels_owner_and_variables() -> None:
    owner = {"apiVersion": "serin.dev/v1alpha1", "kind": "Model", "name": "fraud", "uid": "u", "controller": True}
    env = (("SERIN_MODEL", "fraud"), ("SERIN_SIGNAL", "inputDrift"))
    body = retrain.job_body(TEMPLATE | {"metadata": {"labels": {"team": "a", "app.kubernetes.io/name": "x"}}},
                            "fraud-retrain-1", "team-a", "fraud", env, owner)
    assert body["metadata"]["ownerReferences"] == [owner] and body["metadata"]["namespace"] == "team-a"
    assert body["metadata"]["labels"] == {"team": "a", **retrain.TRAINER_LABELS, "serin.dev/model": "fraud"}
    pod = body["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and body["spec"]["activeDeadlineSeconds"] == retrain.DEFAULT_DEADLINE
    assert pod["containers"][0]["env"] == [{"name": "EPOCHS", "value": "3"}, {"name": "SERIN_MODEL", "value": "fraud"},
                                           {"name": "SERIN_SIGNAL", "value": "inputDrift"}]
    assert TEMPLATE["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"] == "spoofed", "not modified"


def test_the_spec() -> None:
    r = spec(conditions=["Drifted"], approval="Manual", window="24h").monitoring.retrain
    assert r is not None and r.conditions == ("Drifted",) and r.after == 1800 and r.cooldown == 86400
    assert r.window == 86400 and r.approval == "Manual" and r.template == TEMPLATE
    assert parse_spec({"source": {"uri": "s3://m/v1.joblib", "sampleUri": "s3://m/s.csv"}}).monitoring.retrain is None
