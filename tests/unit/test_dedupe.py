from api.native import NativeEvent, to_trigger
from tripmail.ingest.dedupe import content_digest
from tripmail.schemas.trigger import TriggerRequest


def native(**changes: object) -> TriggerRequest:
    body = {"event": "order_paid", "key": "o-1", "contact": {"email": "Ann@Example.com"}, "data": {"a": 1, "b": [2]}}
    return to_trigger(NativeEvent.model_validate(body | changes), workspace_id=1)


def digest(trigger: TriggerRequest) -> str:
    return content_digest(trigger.model_dump(mode="json"))


def test_the_worker_reads_back_the_digest_the_api_claimed() -> None:
    # The api hashes the trigger it queues; the worker hashes the stored request of the trigger it read back.
    accepted = native(data={"b": [2], "a": 1.5, "nested": {"z": None, "y": "ü"}})
    read_back = TriggerRequest.read_back(accepted.model_dump(mode="json"))
    assert content_digest(read_back.model_dump(mode="json")) == digest(accepted)


def test_event_and_key_are_identity_not_content() -> None:
    assert digest(native(event="ORDER_PAID", key="another")) == digest(native())


def test_content_is_everything_else_whatever_its_key_order() -> None:
    assert digest(native(data={"b": [2], "a": 1})) == digest(native())
    assert digest(native(contact={"email": "ann@example.com"})) == digest(native())  # normalised address
    assert digest(native(data={"a": 2, "b": [2]})) != digest(native())
    assert digest(native(contact={"email": "bob@example.com"})) != digest(native())
    assert digest(native(custom_data={"hook": 1})) != digest(native())
