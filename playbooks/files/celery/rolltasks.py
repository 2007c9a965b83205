"""roll lab Celery app (tests/lab/up puts it in ~/app of every celery host; a playbook may
deploy a new version of this file).

One task, `rolltasks.record`: it appends a line per execution to ~/executions.log and makes it
durable (write, flush, fsync) before it returns, so that tests/lab/celery_audit can prove each
published task ran exactly once:

    <task id> <host> <celery version> <pid> <unix time>
"""
import os
import pwd
import time

import celery
from celery import Celery

app = Celery("rolltasks")
app.config_from_object("celeryconfig")

# the lab host: the OS user is rl-<host>
HOST = pwd.getpwuid(os.getuid()).pw_name.removeprefix("rl-")
LOG = os.path.join(pwd.getpwuid(os.getuid()).pw_dir, "executions.log")


@app.task(name="rolltasks.record")
def record(*_args, **_kwargs):
    line = "%s %s %s %d %.6f\n" % (record.request.id, HOST, celery.__version__, os.getpid(),
                                   time.time())
    fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    return HOST
