"""The delivery policy of the worker's tasks, called without Celery: which batches a task publishes and which it
sends itself, and how long it may send."""

from datetime import UTC, datetime

from sqlalchemy.orm import sessionmaker

from tripmail.config import Settings
from tripmail.delivery.flow import Deadlines, InlineRemainder, deliver_planned
from tripmail.delivery.smtp import SendingLoop
from tripmail.queue import ByLane

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def test_full_batches_are_published_to_their_lane_and_the_rest_is_kept_to_send_inline() -> None:
    published: list[tuple[list[int], bool]] = []
    remainder = InlineRemainder(batch_size=3, publish=lambda ids, transactional: published.append((ids, transactional)))

    remainder.enqueue(ByLane(transactional=[1, 2, 3], bulk=[4, 5]))
    remainder.enqueue(ByLane(transactional=[6], bulk=[7, 8, 9, 10]))

    assert published == [([1, 2, 3], True), ([7, 8, 9, 10], False)]
    assert remainder.rest == [4, 5, 6]


def test_a_plan_of_full_batches_only_sends_nothing_inline() -> None:
    """Nothing is left to send here, so neither the database nor the sending loop is asked for."""
    published: list[tuple[list[int], bool]] = []

    def no_sending() -> SendingLoop:
        raise AssertionError("the sending loop was built")

    deliver_planned(
        sessionmaker(),  # bound to no database
        lambda enqueue: enqueue(ByLane(bulk=[1, 2])),
        run_id="run-1",
        sending=no_sending,
        settings=Settings(send_batch_size=2),
        publish=lambda ids, transactional: published.append((ids, transactional)),
        clock=lambda: NOW,
    )

    assert published == [([1, 2], False)]


def test_a_delivery_stops_sending_well_inside_the_time_limit_and_recording_just_inside_it() -> None:
    assert Deadlines.of(600, elapsed_s=0) == Deadlines(send_s=480, record_s=540)
    assert Deadlines.of(600, elapsed_s=30) == Deadlines(send_s=450, record_s=510)


def test_a_task_that_spent_its_time_planning_still_gets_a_second_to_send() -> None:
    assert Deadlines.of(10, elapsed_s=60) == Deadlines(send_s=1.0, record_s=1.0)
