"""The Celery app both processes build, and the task names that are the only link between them."""

from celery import Celery

from tripmail.config import Settings

# Takes a list of [event id, trigger] pairs: one event from the single-event endpoints, many from a batch.
PROCESS_EVENTS = "tripmail.process_events"
DELIVER_MESSAGES = "tripmail.deliver_messages"
# Takes a list of automation run ids whose wait is over (from the scheduler).
CARRY_ON_RUNS = "tripmail.carry_on_runs"
# Takes a list of webhook delivery ids that are due (from the scheduler).
FIRE_WEBHOOKS = "tripmail.fire_webhooks"


def make_celery(settings: Settings) -> Celery:
    # Tasks of a worker that died unacked come back after the visibility timeout, found by a sweep of the
    # unacked set; a sweep every tenth of the timeout (kombu's default: every 100 s) brings them back soon after.
    restore_sweep_s = max(1, min(100, settings.visibility_timeout_s // 10))
    restore_interval_s = min(10, restore_sweep_s)
    app = Celery("tripmail", broker=settings.redis_url)
    app.conf.update(
        # At-least-once: ack only after the task ran, and requeue when its process died under it.
        # Handlers are idempotent (event id primary key, message claim), so a second run is harmless.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        # One reserved task per process: a busy or dying worker strands at most that one.
        worker_prefetch_multiplier=1,
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        # The hard limit stays below the visibility timeout, so Redis never redelivers a task still running.
        task_time_limit=settings.task_time_limit_s,
        broker_transport_options={
            "visibility_timeout": settings.visibility_timeout_s,
            "socket_timeout": 30,
            "socket_keepalive": True,
            "health_check_interval": 25,
            "unacked_restore_interval": restore_interval_s,
            "unacked_restore_throttle": restore_sweep_s // restore_interval_s,
        },
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        # A late-ack task cannot be acked over a lost connection; it is redelivered, so stop running it here.
        worker_cancel_long_running_tasks_on_connection_loss=True,
        worker_hijack_root_logger=False,
    )
    return app
