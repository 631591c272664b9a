from tripmail import queue


def test_tasks_are_described_by_ids_and_counts_never_by_their_data() -> None:
    pairs = [["e1", {"event": "FORGOT_PASSWORD", "data": {"link": "secret"}}], ["e2", {"automation_id": 7}]]
    assert queue.describe(queue.PROCESS_EVENTS, [pairs]) == "2 events: e1 (FORGOT_PASSWORD), e2 (automation 7)"
    assert queue.describe(queue.DELIVER_MESSAGES, [list(range(1, 251))]) == "250 messages: 1, 2, 3, 4, 5 and 245 more"
    assert queue.describe(queue.CARRY_ON_RUNS, [[9]]) == "1 run: 9"
    assert queue.describe(queue.FIRE_WEBHOOKS, [[3, 4]]) == "2 webhook deliveries: 3, 4"
    assert queue.describe("celery.ping", []) is None
