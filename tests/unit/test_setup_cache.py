from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker

from api.lookups import ExpiringCache, SetupCache
from tests.support.builders import apply_spec, make_workspace, password_reset_spec


def test_set_up_is_read_again_once_its_time_is_up(sessions: sessionmaker[Session]) -> None:
    now = [100.0]
    cache = SetupCache(ttl_s=2.0, max_entries=100, clock=lambda: now[0])
    with sessions.begin() as session:
        workspace_id = make_workspace(session, password_reset_spec("acme"))
    event_type, matching, transactional = cache.event(sessions, workspace_id, "forgot_password")
    assert (event_type is not None, matching, transactional) == (True, 1, True)
    assert cache.event(sessions, workspace_id, "SIGNED_UP") == (None, 0, False)

    with sessions.begin() as session:
        apply_spec(session, password_reset_spec("acme", event="SIGNED_UP", name="Welcome", transactional=False))
    now[0] += 1.9
    assert cache.event(sessions, workspace_id, "signed_up") == (None, 0, False)  # still the answer read before
    now[0] += 0.2
    event_type, matching, transactional = cache.event(sessions, workspace_id, "signed_up")
    assert event_type is not None and event_type.key == "SIGNED_UP"
    assert (matching, transactional) == (1, False)


def test_an_event_is_transactional_when_a_send_step_of_its_marketing_automation_is(
    sessions: sessionmaker[Session],
) -> None:
    cache = SetupCache(ttl_s=2.0, max_entries=100)
    obligatory = [{"send_email": {"template": "reset"}}, {"send_email": {"template": "reset", "transactional": True}}]
    with sessions.begin() as session:
        workspace_id = make_workspace(session, password_reset_spec("acme", transactional=False, steps=obligatory))
    assert cache.event(sessions, workspace_id, "FORGOT_PASSWORD").transactional


def test_an_expiring_cache_keeps_no_more_than_its_bound_and_drops_entries_whose_time_is_up() -> None:
    now = [100.0]
    cache: ExpiringCache[str, int] = ExpiringCache(ttl_s=60.0, max_entries=100, clock=lambda: now[0])
    for number in range(10_000):
        cache.put(f"made-up-{number}", number)
    assert len(cache) == 100
    assert (cache.get("made-up-9999"), cache.get("made-up-9899"), cache.get("made-up-9900")) == (9999, None, 9900)

    now[0] += 60.0
    cache.put("later", 1)  # what ran out goes as soon as anything is put, not only when the bound is reached
    assert len(cache) == 1


def count_reads(sessions: sessionmaker[Session]) -> list[str]:
    """The statements sent to the database from now on."""
    statements: list[str] = []
    event.listen(sessions.kw["bind"], "before_cursor_execute", lambda *args: statements.append(args[2]))
    return statements


def test_made_up_event_keys_push_out_the_least_recently_used_entry_and_no_more(
    sessions: sessionmaker[Session],
) -> None:
    with sessions.begin() as session:
        workspace_id = make_workspace(session, password_reset_spec("acme"))
    cache = SetupCache(ttl_s=60.0, max_entries=2, clock=lambda: 100.0)
    reads = count_reads(sessions)
    assert cache.event(sessions, workspace_id, "FORGOT_PASSWORD").matching == 1
    assert cache.event(sessions, workspace_id, "made-up-1") == (None, 0, False)  # kept too: see SetupCache
    cache.event(sessions, workspace_id, "FORGOT_PASSWORD")  # a hit, which makes it the most recently used
    read = len(reads)
    cache.event(sessions, workspace_id, "made-up-2")  # the third key: made-up-1 goes
    assert len(reads) > read

    read = len(reads)
    assert cache.event(sessions, workspace_id, "forgot_password").matching == 1
    assert cache.event(sessions, workspace_id, "made-up-2") == (None, 0, False)
    assert len(reads) == read  # both still kept
    cache.event(sessions, workspace_id, "made-up-1")
    assert len(reads) > read  # read again
