"""Tasks that a real Celery worker runs in tests/accounts/test_metrics.py (`--include`)."""

from celery import shared_task


@shared_task(name="metrics_test.ok")
def ok(value=1):
    return value


@shared_task(name="metrics_test.boom")
def boom():
    raise KeyError("boom")


@shared_task(name="metrics_test.flaky", bind=True, max_retries=3)
def flaky(self):
    if self.request.retries < 1:
        raise self.retry(countdown=0)
    return "ok after a retry"
