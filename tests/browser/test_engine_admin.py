"""Staff import a real Polis conversation, start the engine from the admin and read its results.

Then start a second run with other parameters, compare the two, publish the second and roll back.
Runs headless Chromium (/usr/bin/chromium) through Playwright against the live server; Celery is
eager in tests, so a run is finished when the start form's redirect lands. Screenshots go to
tests/artifacts/.
"""

import io
import re

import pytest
from django.core.management import call_command

from accounts.models import AuditEntry
from consensus.models import EngineRun, OpinionGroup
from consultations.models import Consultation

from ..factories import UserFactory
from .conftest import ARTIFACTS

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "correct horse battery"
RUN_TIMEOUT_MS = 180_000


def test_staff_run_the_engine_on_an_imported_polis_conversation(live_server, browser, data_dir):
    folder = data_dir / "polis" / "brexit-consensus"
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent")
    call_command(
        "import_polis", str(folder), "--consultation", "brexit", "--create",
        "--accept-unmoderated", stdout=io.StringIO(),
    )  # fmt: skip
    consultation = Consultation.objects.get(slug="brexit")
    UserFactory(email="staff@example.org", is_staff=True, is_superuser=True)
    ARTIFACTS.mkdir(exist_ok=True)
    page = browser.new_page(viewport={"width": 1280, "height": 1000}, locale="en-US")

    page.goto(f"{live_server.url}/accounts/login/?next=/admin/consensus/enginerun/add/")
    page.fill("input[name=login]", "staff@example.org")
    page.fill("input[name=password]", PASSWORD)
    page.locator("#main form button[type=submit]").click()
    page.wait_for_url(re.compile(r"/admin/consensus/enginerun/add/"))

    # The admin's "add" picks the consultation, then hands over to the engine's start form.
    page.select_option("select[name=consultation]", str(consultation.pk))
    page.locator("input[type=submit]").click()
    page.wait_for_url(re.compile(r"/engine/brexit/"))
    page.select_option("select[name=kind]", "full")
    page.select_option("select[name=model_name]", "hashing")
    assert not page.locator("input[name=chunk_size]").is_visible()  # folded: defaults suit most
    page.locator("#start-run summary", has_text="Advanced settings").click()
    page.fill("input[name=chunk_size]", "100")
    page.screenshot(path=ARTIFACTS / "engine-start-form.png", full_page=True)
    # the keyboard (a mouse click right after a full-page screenshot can miss in headless Chromium)
    page.locator("#start-run button[type=submit]").press("Enter")
    # the run happens inside the request (eager Celery): allow for a slow, shared machine
    page.wait_for_url(re.compile(r"/engine/brexit/runs/\d+/$"), timeout=RUN_TIMEOUT_MS)

    first = EngineRun.objects.get(consultation=consultation)
    assert first.status == EngineRun.Status.DONE, first.error
    page.locator("#run-body [data-status=done]").wait_for()
    groups = OpinionGroup.objects.filter(run=first).order_by("number")
    assert groups.count() >= 2
    body = page.locator("#run-body").inner_text()
    for group in groups:
        assert f"Group {group.number + 1}" in body and f"{group.size} participants" in body
    assert "What this group stands for" in body
    assert page.locator("#group-consensus + p + table tbody tr").count() == 10
    assert page.locator("#bridging + p + table tbody tr").count() == 10
    page.screenshot(path=ARTIFACTS / "engine-run-polis.png", full_page=True)

    # A second run with other clustering parameters, kept unpublished.
    page.goto(f"{live_server.url}/engine/brexit/")
    page.select_option("select[name=kind]", "full")
    page.select_option("select[name=model_name]", "hashing")
    page.locator("#start-run summary", has_text="Advanced settings").click()
    page.fill("input[name=chunk_size]", "100")
    page.fill("input[name=seed]", "7")
    page.select_option("select[name=cluster_method]", "agglomerative")
    page.fill("input[name=max_groups]", "3")
    page.select_option("select[name=publish]", "manual")
    # the keyboard (a mouse click right after a full-page screenshot can miss in headless Chromium)
    page.locator("#start-run button[type=submit]").press("Enter")
    # the run happens inside the request (eager Celery): allow for a slow, shared machine
    page.wait_for_url(re.compile(r"/engine/brexit/runs/\d+/$"), timeout=RUN_TIMEOUT_MS)
    second = EngineRun.objects.exclude(pk=first.pk).get(consultation=consultation)
    assert second.status == EngineRun.Status.DONE, second.error
    assert second.parameters["method"] == "agglomerative"
    consultation.refresh_from_db()
    assert consultation.current_run_id == first.pk

    # Compare: the page from the run's own button, with both runs' metrics side by side.
    page.get_by_role("link", name="Compare with the published run").click()
    page.wait_for_url(re.compile(r"/engine/brexit/compare/\?a="))
    page.locator("#compare-result [data-count=split]").wait_for()
    text = page.locator("#compare-result").inner_text()
    assert f"From run #{first.pk} to run #{second.pk}" in text
    assert "Ideas that split" in text and "Ideas that merged" in text
    page.screenshot(path=ARTIFACTS / "engine-compare.png", full_page=True)

    # Publish the second run, then roll back to the first.
    page.goto(f"{live_server.url}/engine/brexit/runs/{second.pk}/")
    page.get_by_role("button", name="Publish these results").click()
    page.wait_for_url(re.compile(rf"/engine/brexit/runs/{second.pk}/$"))
    consultation.refresh_from_db()
    assert consultation.current_run_id == second.pk
    page.goto(f"{live_server.url}/engine/brexit/")
    page.get_by_role("button", name=f"Roll back to run #{first.pk}").click()
    page.wait_for_url(re.compile(r"/engine/brexit/$"))
    consultation.refresh_from_db()
    assert consultation.current_run_id == first.pk
    assert "Rolled back" in page.locator(".messages").inner_text()
    page.screenshot(path=ARTIFACTS / "engine-rolled-back.png", full_page=True)
    actions = set(AuditEntry.objects.values_list("action", flat=True))
    assert {"engine_run.start", "engine_run.make_current", "engine_run.rollback"} <= actions
