"""roll lab Celery config, release "classic" (Celery 5.4.0, kombu 5.3.x).

The same file on every celery host; what differs per host (the broker URLs and password) is
read from ~/.config/roll-celery/broker_url (mode 0600, written by tests/lab/up): a
`;`-separated failover list, the host's own cluster node (c2 or c3) first.

The shared queue `tasks` (direct exchange `tasks`, routing key `tasks`) is declared with an
explicit queue type: a classic queue here. A worker whose declaration differs from the queue on
the broker gets 406 PRECONDITION_FAILED for x-queue-type.
"""
import os

from kombu import Exchange, Queue

with open(os.path.expanduser("~/.config/roll-celery/broker_url")) as _f:
    broker_url = _f.read().strip()

QUEUE_TYPE = "classic"

task_queues = (
    Queue("tasks", Exchange("tasks", type="direct", durable=True), routing_key="tasks",
          durable=True, queue_arguments={"x-queue-type": QUEUE_TYPE}),
)
task_default_queue = "tasks"
task_default_exchange = "tasks"
task_default_exchange_type = "direct"
task_default_routing_key = "tasks"
task_create_missing_queues = False

# one task at a time, acknowledged when it starts (Celery's default: acks early)
worker_concurrency = 1
task_acks_late = False
worker_prefetch_multiplier = 1
worker_send_task_events = False
worker_hijack_root_logger = True
task_ignore_result = True
result_backend = None

broker_connection_retry_on_startup = True
broker_connection_max_retries = None  # retry forever (a node of the cluster may be down)
broker_heartbeat = 30
worker_cancel_long_running_tasks_on_connection_loss = False
timezone = "UTC"
