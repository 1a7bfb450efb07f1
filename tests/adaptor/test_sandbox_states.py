"""The sandbox state table, driven directly: no sockets, no event loop, no I/O."""

from __future__ import annotations

import pytest

from adaptor.states import (
    Event,
    Holdings,
    IllegalTransition,
    SandboxState,
    State,
    advance,
    loaded,
    recorded,
)

S = SandboxState
CREATED = State()


def run(state: State, *events: Event) -> State:
    for event in events:
        state = advance(state, event)
    return state


def test_a_sandbox_starts_and_stops_to_nothing() -> None:
    running = run(CREATED, Event.START, Event.INSTANCE_CREATED, Event.TUNNEL_UP,
                  Event.PROXY_UP)
    assert running == State(S.RUNNING, Holdings(instance=True, tunnel=True, proxy=True))
    stopping = advance(running, Event.STOP)
    assert stopping.phase is S.STOPPING and stopping.holds == running.holds
    gone = run(stopping, Event.PROXY_CLOSED, Event.INSTANCE_DELETED, Event.TUNNEL_REMOVED,
               Event.VXLAN_RELEASED, Event.SETTLE)
    assert gone == State(S.GONE, Holdings(vxlan_id=False))
    assert gone.remains() == "nothing"


def test_created_holds_only_its_vxlan_id() -> None:
    assert CREATED.holds.to_undo == ("vxlan_id",)
    gone = run(CREATED, Event.STOP, Event.VXLAN_RELEASED, Event.SETTLE)
    assert gone.phase is S.GONE


def test_a_failed_tunnel_teardown_is_remembered_and_retried() -> None:
    running = run(CREATED, Event.START, Event.INSTANCE_CREATED, Event.TUNNEL_UP,
                  Event.PROXY_UP)
    # The instance goes, the tunnel teardown fails: the stop settles in STOP_FAILED with
    # the tunnel and the VXLAN id still to undo, not in GONE.
    failed = run(running, Event.STOP, Event.PROXY_CLOSED, Event.INSTANCE_DELETED,
                 Event.SETTLE)
    assert failed == State(S.STOP_FAILED, Holdings(tunnel=True))
    assert failed.remains() == "tunnel, vxlan_id"
    # A STOP_FAILED sandbox is not started again, only stopped again.
    with pytest.raises(IllegalTransition):
        advance(failed, Event.START)
    retried = run(failed, Event.STOP, Event.TUNNEL_REMOVED, Event.VXLAN_RELEASED,
                  Event.SETTLE)
    assert retried.phase is S.GONE


def test_a_failed_instance_delete_is_remembered() -> None:
    running = run(CREATED, Event.START, Event.INSTANCE_CREATED, Event.TUNNEL_UP,
                  Event.PROXY_UP)
    failed = run(running, Event.STOP, Event.PROXY_CLOSED, Event.SETTLE)
    assert failed == State(S.STOP_FAILED, Holdings(instance=True, tunnel=True))
    assert failed.remains() == "instance, tunnel, vxlan_id"


def test_an_undone_start_goes_back_to_created() -> None:
    starting = run(CREATED, Event.START, Event.INSTANCE_CREATED, Event.TUNNEL_UP)
    undone = run(starting, Event.TUNNEL_REMOVED, Event.INSTANCE_DELETED, Event.SETTLE)
    assert undone == CREATED  # the VXLAN id stays for the retry
    # Nothing created at all (the provider failed): straight back.
    assert run(CREATED, Event.START, Event.SETTLE) == CREATED


def test_an_undo_that_leaves_something_is_a_stop_failure() -> None:
    starting = run(CREATED, Event.START, Event.INSTANCE_CREATED, Event.TUNNEL_UP)
    assert run(starting, Event.INSTANCE_DELETED, Event.SETTLE) == State(
        S.STOP_FAILED, Holdings(tunnel=True))
    assert run(starting, Event.TUNNEL_REMOVED, Event.SETTLE) == State(
        S.STOP_FAILED, Holdings(instance=True))


def test_an_instance_left_by_an_abandoned_creation_must_be_deleted() -> None:
    left = advance(CREATED, Event.INSTANCE_LEFT)
    assert left == State(S.STOP_FAILED, Holdings(instance=True))


@pytest.mark.parametrize(("state", "event"), [
    (CREATED, Event.INSTANCE_CREATED),  # only a StartVM creates instances
    (CREATED, Event.TUNNEL_UP),
    (CREATED, Event.PROXY_UP),
    (State(S.STARTING), Event.TUNNEL_UP),  # no tunnel before the instance has an IP
    (State(S.STARTING), Event.PROXY_UP),
    (CREATED, Event.VXLAN_RELEASED),  # released only by a stop
    (CREATED, Event.SETTLE),
    (State(S.STOPPING), Event.START),  # a stop in progress (or interrupted) is finished
    (State(S.RUNNING, Holdings(instance=True, tunnel=True, proxy=True)), Event.START),
    (State(S.GONE, Holdings(vxlan_id=False)), Event.STOP),
    (State(S.GONE, Holdings(vxlan_id=False)), Event.START),
])
def test_illegal_transitions_are_refused(state: State, event: Event) -> None:
    with pytest.raises(IllegalTransition) as info:
        advance(state, event)
    assert event.value in str(info.value)


def test_a_running_sandbox_without_proxy_may_start_again() -> None:
    lost = loaded(S.RUNNING, instance=True, tunnel=True)
    assert lost.holds == Holdings(instance=True, tunnel=True, proxy=False)
    resumed = advance(lost, Event.PROXY_UP)
    assert resumed.phase is S.RUNNING and resumed.holds.proxy
    restarting = advance(lost, Event.START)
    assert restarting == State(S.STARTING, lost.holds)


def test_an_interrupted_stop_is_stopped_again() -> None:
    stopping = run(CREATED, Event.START, Event.INSTANCE_CREATED, Event.STOP)
    assert advance(stopping, Event.STOP) == stopping
    assert run(stopping, Event.INSTANCE_DELETED, Event.VXLAN_RELEASED, Event.SETTLE).phase \
        is S.GONE


def test_forget_drops_everything() -> None:
    assert advance(State(S.STARTING), Event.FORGET) == State(S.GONE, Holdings(vxlan_id=False))


def test_only_lasting_phases_are_recorded() -> None:
    assert recorded(S.STOPPING) is S.RUNNING
    for phase in (S.CREATED, S.STARTING, S.RUNNING, S.STOP_FAILED):
        assert recorded(phase) is phase
