"""Staff import a real Polis export (as a ZIP) from the imports page and read the job's report.

Headless Chromium (/usr/bin/chromium) through Playwright against the live server; Celery is eager
in tests, so the job has run when the upload's redirect lands. Screenshots go to tests/artifacts/.
"""

import re
import zipfile

import pytest

from consultations.models import ImportJob, Proposal, Vote

from ..factories import ConsultationFactory, UserFactory
from .conftest import ARTIFACTS

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "correct horse battery"


def test_staff_import_a_polis_zip_and_read_the_report(live_server, browser, data_dir, tmp_path, settings):
    folder = data_dir / "polis" / "brexit-consensus"
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent")
    settings.MEDIA_ROOT = tmp_path / "media"
    archive = tmp_path / "brexit-consensus.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for name in ("comments.csv", "votes.csv", "summary.csv"):
            z.write(folder / name, f"brexit-consensus/{name}")
    consultation = ConsultationFactory(slug="brexit", question="Brexit: what do we agree on?")
    UserFactory(email="staff@example.org", is_staff=True, is_superuser=True)
    ARTIFACTS.mkdir(exist_ok=True)
    page = browser.new_page(viewport={"width": 1280, "height": 1000}, locale="en-US")

    page.goto(f"{live_server.url}/accounts/login/?next=/staff/imports/")
    page.fill("input[name=login]", "staff@example.org")
    page.fill("input[name=password]", PASSWORD)
    page.locator("#main form button[type=submit]").click()
    page.wait_for_url(re.compile(r"/staff/imports/$"))

    page.select_option("select[name=consultation]", consultation.slug)
    page.select_option("select[name=kind]", "polis")
    page.select_option("select[name=unmoderated]", "accepted")
    page.set_input_files("input[name=file]", str(archive))
    page.screenshot(path=ARTIFACTS / "import-form.png", full_page=True)
    page.locator("#main form button[type=submit]").click()
    page.wait_for_url(re.compile(r"/staff/imports/\d+/$"))

    job = ImportJob.objects.get()
    assert job.status == ImportJob.Status.DONE, job.error
    page.locator("#job-body [data-status=done]").wait_for()
    assert page.locator("progress").get_attribute("value") == "100"
    body = page.locator("#job-body").inner_text()
    assert str(job.created_count) in body and job.created_count > 0
    assert Proposal.objects.filter(consultation=consultation).count() == job.created_count
    assert Vote.objects.filter(proposal__consultation=consultation).exists()
    page.screenshot(path=ARTIFACTS / "import-done.png", full_page=True)

    # A file in the wrong format is refused with a message, and nothing is stored.
    page.goto(f"{live_server.url}/staff/imports/")
    page.select_option("select[name=consultation]", consultation.slug)
    page.select_option("select[name=kind]", "makeorg")
    page.set_input_files("input[name=file]", str(archive))
    page.locator("#main form button[type=submit]").click()
    page.locator(".errorlist").first.wait_for()
    assert "ZIP archive, not a CSV" in page.locator("#main").inner_text()
    page.screenshot(path=ARTIFACTS / "import-refused.png", full_page=True)
    assert ImportJob.objects.count() == 1
