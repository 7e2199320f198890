"""What `make run` shows: the real demo consultation, after the engine ran on it."""

import csv
from io import StringIO

import pytest
from django.core.management import call_command
from django.urls import reverse
from django.utils.html import escape

from consensus.models import EngineRun, Idea
from consultations.models import Consultation

from .factories import UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def demo(data_dir, django_capture_on_commit_callbacks):
    call_command(
        "load_demo", "--limit", "60", "--polis", "london.youth.policing", "--data-dir", str(data_dir),
        stdout=StringIO(),
    )
    # Runs are enqueued on commit; the test transaction never commits, so run the callbacks.
    with django_capture_on_commit_callbacks(execute=True):
        call_command("engine_run", "--model", "hashing", stdout=StringIO())
    with open(data_dir / "opentext/makeorg_monde_dapres_2020/proposals.csv", encoding="utf-8") as f:
        first = next(csv.DictReader(f))["text"].strip()
    return first


def test_demo_pages_show_real_imported_content(client, demo):
    monde = Consultation.objects.get(slug="monde-dapres")
    polis = Consultation.objects.get(slug="london-youth-policing")

    home = client.get(reverse("home")).content.decode()
    assert escape(monde.question) in home and escape(polis.question) in home

    cause = client.get(monde.cause.get_absolute_url()).content.decode()
    assert escape(monde.question) in cause

    page = client.get(monde.get_absolute_url(), {"q": demo[10:40]}).content.decode()
    assert escape(demo) in page

    polis_page = client.get(polis.get_absolute_url()).content.decode()
    assert "Computational Democracy Project" in polis_page  # CC BY attribution shown

    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    admin = client.get(reverse("admin:consultations_proposal_changelist"), {"q": demo[10:40]})
    assert escape(demo[:60]) in admin.content.decode()


def test_demo_engine_runs_are_published(demo):
    for consultation in Consultation.objects.all():
        assert consultation.current_run is not None
        assert consultation.current_run.status == EngineRun.Status.DONE
    assert Idea.objects.filter(run__in=Consultation.objects.values("current_run")).exists()
    polis = Consultation.objects.get(slug="london-youth-policing")
    assert polis.current_run.opinion_groups.count() >= 2
    # its votes were all cast in Polis: the scores read them alone, not half against the empty
    # counter of this site's sequence; Make.org's consultation keeps Make.org's weight
    assert polis.non_sequence_votes_weight == 1.0
    assert polis.current_run.metrics["non_sequence_votes_weight"] == 1.0
    assert Consultation.objects.get(slug="monde-dapres").non_sequence_votes_weight == 0.5


def test_engine_run_command_refuses_unknown_consultations():
    from django.core.management import CommandError

    with pytest.raises(CommandError, match="Unknown consultation"):
        call_command("engine_run", "nope", stdout=StringIO())
