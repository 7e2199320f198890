"""Citizens ask to be emailed a consultation's results: once for its first results, once for its
final ones (consultations/alerts.py)."""

import json
import threading
from datetime import timedelta
from unittest import mock
from urllib.parse import quote

import pytest
from django.core import mail
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from causes.models import Cause
from consensus import services as engine
from consensus.models import EngineRun, Idea
from consultations import alerts
from consultations.models import ResultsAlert
from consultations.tasks import results_alerts_send

from ..consensus.engine_data import HASHING, consultation_with_themes
from ..factories import CauseFactory, ConsultationFactory, ProposalFactory, UserFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("english")]

HX = {"HTTP_HX_REQUEST": "true"}


def alert_url(consultation):
    return reverse("consultations:results_alert", args=[consultation.slug])


def publish(consultation, *, at=None):
    """A done run made current, published ``at`` (now by default), as the engine does."""
    run = EngineRun.objects.create(
        consultation=consultation,
        status=EngineRun.Status.DONE,
        published_at=at or timezone.now(),
    )
    consultation.current_run = run
    consultation.save(update_fields=["current_run"])
    return run


def asking(consultation, n):
    users = [UserFactory() for _ in range(n)]
    for user in users:
        alerts.alert_create(consultation=consultation, user=user)
    return users


def test_a_visitor_is_asked_to_log_in_and_a_citizen_asks_and_stops(client):
    consultation = ConsultationFactory()
    page = client.get(consultation.get_absolute_url()).content.decode()
    assert "to be emailed when the results are published" in page
    assert client.post(alert_url(consultation)).status_code == 302  # to the login page
    assert not ResultsAlert.objects.exists()

    user = UserFactory()
    client.force_login(user)
    assert "Email me the results" in client.get(consultation.get_absolute_url()).content.decode()
    box = client.post(alert_url(consultation), **HX).content.decode()
    assert "We will email you when its results are published" in box and "<html" not in box
    client.post(alert_url(consultation), **HX)  # a double click
    assert ResultsAlert.objects.filter(user=user, consultation=consultation).count() == 1

    response = client.post(alert_url(consultation), {"stop": "1"})
    assert response.status_code == 302 and response["Location"] == consultation.get_absolute_url()
    assert not ResultsAlert.objects.exists()
    assert client.get(alert_url(consultation)).status_code == 405


def test_the_first_results_are_emailed_once_whatever_the_runs_after_them(settings):
    settings.CONCORDE_SITE_URL = "https://concorde.example"
    consultation = ConsultationFactory(question="How can we sort our waste better?", language="en")
    users = asking(consultation, 3)
    assert alerts.alerts_send(consultation_id=consultation.pk) == 0  # nothing published yet

    publish(consultation)
    assert alerts.alerts_send(consultation_id=consultation.pk) == 3

    assert sorted(m.to[0] for m in mail.outbox) == sorted(u.email for u in users)
    message = mail.outbox[0]
    assert message.subject == "The first results are out: “How can we sort our waste better?”"
    results = f"https://concorde.example/engine/{consultation.slug}/results/"
    assert results in message.body and "final results" in message.body
    stop = message.extra_headers["List-Unsubscribe"].strip("<>")
    assert (
        stop.startswith("https://concorde.example/c/results-alert/stop/") and stop in message.body
    )
    assert ResultsAlert.objects.filter(first_sent_at__isnull=True).count() == 0

    publish(consultation)  # the nightly run publishes again
    assert alerts.alerts_send(consultation_id=consultation.pk) == 0
    assert len(mail.outbox) == 3


def test_the_final_results_are_emailed_once_after_the_close(client):
    consultation = ConsultationFactory(
        starts_at=timezone.now() - timedelta(days=30),
        ends_at=timezone.now() + timedelta(days=1),
        language="en",
    )
    early, late = asking(consultation, 2)
    publish(consultation)
    alerts.alerts_send(consultation_id=consultation.pk)
    ResultsAlert.objects.filter(user=late).delete()
    alerts.alert_create(consultation=consultation, user=late)  # asked after the first results
    consultation.ends_at = timezone.now() - timedelta(hours=1)
    consultation.save(update_fields=["ends_at"])
    # a run published before the close is not the final results; the late one saw the first
    publish(consultation, at=consultation.ends_at - timedelta(minutes=5))
    assert alerts.alerts_send(consultation_id=consultation.pk) == 0
    mail.outbox.clear()

    publish(consultation)
    assert alerts.alerts_send(consultation_id=consultation.pk) == 2
    assert {m.subject for m in mail.outbox} == {f"Final results: “{consultation.question}”"}
    assert "has closed and its final results are published" in mail.outbox[0].body
    assert alerts.alerts_send(consultation_id=consultation.pk) == 0
    marks = ResultsAlert.objects.values_list("first_sent_at", "final_sent_at")
    assert all(first and final for first, final in marks)
    # the box is gone once the final results are out
    client.force_login(UserFactory())
    assert (
        "Email me the results" not in client.get(consultation.get_absolute_url()).content.decode()
    )


def test_nobody_is_emailed_who_may_not_see_the_results_or_has_no_address():
    private = CauseFactory(kind=Cause.Kind.PRIVATE_CONSULTATION)
    consultation = ConsultationFactory(cause=private)
    member, outsider = asking(consultation, 2)
    private.members.add(member)
    inactive, no_address = asking(consultation, 2)
    private.members.add(inactive, no_address)
    inactive.is_active = False
    inactive.save()
    no_address.email = ""
    no_address.save()
    publish(consultation)

    assert alerts.alerts_send(consultation_id=consultation.pk) == 1
    assert [m.to for m in mail.outbox] == [[member.email]]

    draft = ConsultationFactory(cause=CauseFactory(status=Cause.Status.DRAFT))
    asking(draft, 1)
    publish(draft)
    assert alerts.alerts_send(consultation_id=draft.pk) == 0


def test_a_failed_send_marks_nothing_and_the_retry_sends_it():
    consultation = ConsultationFactory()
    asking(consultation, 2)
    publish(consultation)
    with mock.patch("consultations.alerts.get_connection") as connection_:
        connection_.return_value.send_messages.side_effect = OSError("SMTP down")
        with pytest.raises(OSError):
            alerts.alerts_send(consultation_id=consultation.pk)
    assert ResultsAlert.objects.filter(first_sent_at__isnull=True).count() == 2
    assert results_alerts_send.delay(consultation.pk).get() == 2
    with pytest.raises(ValueError, match="integer"):
        results_alerts_send("12")


def test_publishing_a_run_emails_those_who_asked(django_capture_on_commit_callbacks, settings):
    settings.CONCORDE_SITE_URL = "https://concorde.example"
    consultation = consultation_with_themes(language="en")
    asking(consultation, 2)
    with django_capture_on_commit_callbacks(execute=True):
        run = engine.engine_run_start(consultation=consultation, kind="full", **HASHING)
    run.refresh_from_db()
    assert run.status == EngineRun.Status.DONE, run.error
    assert len(mail.outbox) == 2
    assert ResultsAlert.objects.filter(first_sent_at__isnull=False).count() == 2
    # what came out is in the email itself: nobody voted yet, so the largest ideas, each with its page
    body = mail.outbox[0].body
    largest = Idea.objects.filter(run=run, size__gt=0).order_by("-size", "number")[:3]
    assert "Its largest ideas so far:" in body
    for idea in largest:
        page = reverse("consensus:results_idea", args=[consultation.slug, idea.number])
        assert f"- {idea.label}\n  https://concorde.example{page}\n" in body


def test_the_stop_link_asks_then_stops_without_logging_in(client):
    consultation = ConsultationFactory()
    (user,) = asking(consultation, 1)
    token = alerts.stop_token(consultation_id=consultation.pk, user_id=user.pk)
    url = reverse("consultations:results_alert_stop", args=[token])

    page = client.get(url).content.decode()
    assert "Stop the emails about the results of" in page  # a GET (a mail scanner) stops nothing
    assert ResultsAlert.objects.filter(user=user).exists()
    assert client.post(url).status_code == 200
    assert not ResultsAlert.objects.filter(user=user).exists()
    assert "You will not be emailed the results" in client.get(url).content.decode()
    assert client.get(url[:-3] + "xx/").status_code == 404
    assert client.get(reverse("consultations:results_alert_stop", args=["nope"])).status_code == 404


def test_the_personal_data_download_lists_the_results_asked_for(client):
    consultation = ConsultationFactory()
    (user,) = asking(consultation, 1)
    client.force_login(user)
    data = json.loads(client.get(reverse("accounts:my_data_download")).content)
    assert [a["consultation"] for a in data["results_alerts"]] == [consultation.slug]


@pytest.mark.realservices
@pytest.mark.django_db(transaction=True)
def test_two_sends_at_once_email_each_citizen_once():
    consultation = ConsultationFactory()
    asking(consultation, 250)
    publish(consultation)
    barrier, counts = threading.Barrier(2), []

    def send():
        try:
            barrier.wait()
            counts.append(alerts.alerts_send(consultation_id=consultation.pk))
        finally:
            connection.close()

    threads = [threading.Thread(target=send) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(counts) == 250
    assert sorted(m.to[0] for m in mail.outbox) == sorted(
        ResultsAlert.objects.values_list("user__email", flat=True)
    )


def test_once_results_are_out_the_box_offers_the_final_ones_if_the_consultation_closes(client):
    closing = ConsultationFactory(ends_at=timezone.now() + timedelta(days=3))
    endless = ConsultationFactory(ends_at=None)
    publish(closing)
    publish(endless)
    client.force_login(UserFactory())

    page = client.get(closing.get_absolute_url()).content.decode()
    assert "Email me the final results" in page
    box = client.post(alert_url(closing), **HX).content.decode()
    assert "We will email you its final results, once it has closed." in box
    assert alerts.alerts_send(consultation_id=closing.pk) == 0  # the first results: seen
    # a consultation that never closes has no final results to wait for
    assert "Email me" not in client.get(endless.get_absolute_url()).content.decode()


def test_staff_see_how_many_citizens_a_publication_will_email(client):
    consultation = ConsultationFactory(ends_at=timezone.now() + timedelta(days=3))
    asking(consultation, 3)
    client.force_login(UserFactory(is_staff=True))
    url = reverse("consensus:runs", args=[consultation.slug])

    page = " ".join(client.get(url).content.decode().split())
    assert "the next publication tells 3 citizens that first results are out." in page
    assert "3 wait for the final results" in page

    publish(consultation)
    alerts.alerts_send(consultation_id=consultation.pk)
    page = " ".join(client.get(url).content.decode().split())
    assert "tells 0 citizens" in page and "3 wait for the final results" in page


def test_the_emails_speak_the_consultations_language_when_the_site_does(settings):
    french = ConsultationFactory(question="Comment mieux trier nos déchets ?", language="fr")
    german = ConsultationFactory(question="Wie trennen wir Müll besser?", language="de")
    for consultation in (french, german):
        asking(consultation, 1)
        publish(consultation)
        alerts.alerts_send(consultation_id=consultation.pk)

    subjects = [m.subject for m in mail.outbox]
    assert (
        subjects[0]
        == "Les premiers résultats sont publiés\u00a0: «\u00a0Comment mieux trier nos déchets ?\u00a0»"
    )
    # German is not among the site's languages: the site's own (English in these tests)
    assert subjects[1] == "The first results are out: “Wie trennen wir Müll besser?”"
    assert "Voir les résultats" in mail.outbox[0].body


def test_the_end_of_a_sequence_offers_the_results_and_its_login_link_comes_back_to_the_page(
    client,
):
    consultation = ConsultationFactory(sequence_size=1)
    ProposalFactory(consultation=consultation)
    client.post(reverse("consultations:sequence", args=[consultation.slug]))
    next_url = reverse("consultations:sequence_next", args=[consultation.slug])

    end = client.post(next_url, {"position": 1}, **HX).content.decode()  # no vote: skipped

    assert 'data-card="end"' in end
    login = reverse("account_login") + "?next=" + quote(consultation.get_absolute_url())
    assert f'<a href="{login}">Log in</a> to be emailed when the results are published' in end
