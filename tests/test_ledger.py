"""The ledger's transitions, without processes: what each does to a member's line, and what it refuses."""
import json

import pytest

from ensemble.job.ledger import LastRun, LedgerError, MemberEntry, MemberState
from ensemble.job.record import JobRecord, new_record
from ensemble.job.spec import JobSpec


def member() -> MemberEntry:
    return MemberEntry(3, "member-03", 10)


def started(entry=None, epoch=0) -> MemberEntry:
    entry = entry or member()
    entry.start(slot="gpu:1", device="gpu:1", executor="local", pid=4242, host="box", epoch=epoch, when="t0")
    return entry


def test_a_start_makes_a_running_attempt_with_its_place():
    entry = started(epoch=2)
    assert (entry.state, entry.attempts, entry.pid, entry.device, entry.epoch, entry.started, entry.ended) == (
        MemberState.RUNNING, 1, 4242, "gpu:1", 2, "t0", None)


def test_progress_reports_change_only_what_differs():
    entry = started()
    assert entry.report(1, 0.9) is True and (entry.epoch, entry.val_accuracy) == (1, 0.9)
    assert entry.report(1, 0.9) is False and entry.report(None, None) is False


def test_finish_records_the_result_and_a_time_limit_stop_stays_resumable():
    entry = started()
    entry.finish(epoch=12, epochs=12, val_accuracy=0.99, best_epoch=11, returncode=0, when="t1")
    assert (entry.state, entry.pid, entry.ended, entry.best_epoch, entry.stopped_early, entry.note) == (
        MemberState.DONE, None, "t1", 11, False, None)
    with pytest.raises(LedgerError, match="member-03 is done; expected pending or failed"):
        started(entry)

    stopped = started()
    stopped.finish(epoch=5, epochs=12, val_accuracy=0.9, best_epoch=5, returncode=0, when="t1")
    assert stopped.state is MemberState.DONE and stopped.stopped_early and "epoch 5/12" in stopped.note
    started(stopped)  # a rerun with more time continues it
    assert (stopped.state, stopped.attempts) == (MemberState.RUNNING, 2)


@pytest.mark.parametrize("end, state", [("retry", MemberState.PENDING), ("fail", MemberState.FAILED),
                                        ("interrupt", MemberState.PENDING)])
def test_an_attempt_that_does_not_finish_leaves_the_member_resumable_or_failed(end, state):
    entry = started()
    if end == "interrupt":
        entry.interrupt(when="t2")
    else:
        getattr(entry, end)("was killed by SIGKILL", returncode=-9, when="t2")
    assert (entry.state, entry.pid, entry.ended) == (state, None, "t2")
    started(entry)  # pending and failed members both start again on a rerun
    assert entry.attempts == 2


@pytest.mark.parametrize("transition", [
    lambda e: e.finish(epoch=1, epochs=1, val_accuracy=1.0, best_epoch=1, returncode=0, when="t"),
    lambda e: e.retry("x", returncode=1, when="t"),
    lambda e: e.fail("x", returncode=1, when="t"),
    lambda e: e.interrupt(when="t"),
    lambda e: e.report(1, 0.5),
    lambda e: e.placed(pid=1, host="h", device="cpu", ray_node_id=None),
], ids=["finish", "retry", "fail", "interrupt", "report", "placed"])
def test_only_a_running_member_can_end_an_attempt_or_report(transition):
    with pytest.raises(LedgerError, match="member-03 is pending; expected running"):
        transition(member())


@pytest.mark.parametrize("state, finished, fault, expected, says", [
    (MemberState.DONE, True, None, MemberState.DONE, None),
    (MemberState.PENDING, True, None, MemberState.DONE, None),           # files finished after a lost update
    (MemberState.DONE, False, None, MemberState.PENDING, "recorded done but its files are incomplete"),
    (MemberState.RUNNING, False, None, MemberState.PENDING, "its runner stopped while it trained"),
    (MemberState.DONE, True, "best.keras: cut", MemberState.PENDING, "best.keras: cut; its outputs are made again"),
    (MemberState.FAILED, False, None, MemberState.FAILED, None),
])
def test_reconcile_makes_the_ledger_agree_with_the_files(state, finished, fault, expected, says):
    entry = member()
    entry.state = state
    note = entry.reconcile(finished, fault)
    assert entry.state is expected
    assert (note is None) if says is None else (says in note)


def test_a_record_round_trips_through_json_and_reads_what_older_versions_wrote(tmp_path):
    record = new_record("j", JobSpec.from_options(precision="float32"), tmp_path).ensure_members(2)
    started(record.members[1])
    record.last_run = LastRun(pid=1, host="h", started="t", executor="local", members=2, retries=2, deadline=5.0)
    text = json.dumps(record.to_dict())
    assert json.loads(text)["members"][1]["state"] == "running"  # the JSON keeps the plain strings
    again = JobRecord.from_dict(json.loads(text))
    assert again == record
    older = json.loads(text)
    for entry in older["members"]:  # a record from before the fields that later versions added
        for key in ("ray_node_id", "stopped_early", "slot"):
            entry.pop(key, None)
    older["last_run"] = None
    assert [m.state for m in JobRecord.from_dict(older).members] == [MemberState.PENDING, MemberState.RUNNING]
