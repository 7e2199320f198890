"""Every page says what it is to search engines and link previews, and shows Concorde's icon."""

import re
from html import unescape

import pytest
from django.contrib.staticfiles import finders
from django.urls import reverse

from .actions.factories import ActionFactory
from .consensus.engine_data import consultation_with_themes
from .consensus.test_results_views import start
from .factories import CauseFactory, ConsultationFactory, ProposalFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("english")]


def description(client, url):
    body = client.get(url).content.decode()
    found = re.findall(r'<meta name="description" content="([^"]*)">', body)
    assert len(found) == 1, url
    return unescape(found[0])


def test_each_page_describes_itself(client, django_capture_on_commit_callbacks):
    assert description(client, reverse("home")).startswith("Concorde, open-source civic")
    cause = CauseFactory(summary='Culture for all, "everywhere" <now>')
    assert description(client, cause.get_absolute_url()) == 'Culture for all, "everywhere" <now>'

    consultation = ConsultationFactory(cause=cause, description="")
    assert description(client, consultation.get_absolute_url()) == consultation.question
    consultation.description = "Long. " * 60
    consultation.save(update_fields=["description"])
    text = description(client, consultation.get_absolute_url())
    assert len(text) == 200 and text.endswith("…")

    proposal = ProposalFactory(
        consultation=consultation, content='Il faut "ouvrir" les <b>musées</b> le soir'
    )
    url = reverse("consultations:proposal", args=[consultation.slug, proposal.pk])
    assert description(client, url) == proposal.content  # escaped in the page, whole here

    action = ActionFactory(description="Open 40 libraries on Sundays, measured each month.")
    assert description(client, action.get_absolute_url()) == action.description

    themed = consultation_with_themes()
    run = start(themed, django_capture_on_commit_callbacks)
    results = reverse("consensus:results", args=[themed.slug])
    assert description(client, results) == (
        f"Results of “{themed.question}”: the ideas its proposals bring out, and what brings "
        "its participants together or divides them."
    )
    idea = run.ideas.filter(size__gt=1).first()
    url = reverse("consensus:results_idea", args=[themed.slug, idea.number])
    assert description(client, url) == (
        f"{idea.label}: an idea of {idea.size} proposals in the consultation “{themed.question}”."
    )


def test_link_previews_get_the_pages_address_and_the_icon_is_ours(client):
    consultation = ConsultationFactory()
    body = client.get(consultation.get_absolute_url(), {"q": 'a"b'}).content.decode()
    assert '<meta property="og:site_name" content="Concorde">' in body
    url = re.search(r'<meta property="og:url" content="([^"]*)">', body).group(1)
    assert unescape(url) == f"http://testserver{consultation.get_absolute_url()}?q=a%22b"
    icon = re.search(r'<link rel="icon" href="([^"]*)" type="image/svg\+xml">', body).group(1)
    assert icon.endswith("favicon.svg")
    path = finders.find("favicon.svg")
    assert path and open(path, encoding="utf-8").read().startswith("<svg")


def test_descriptions_in_french(client, django_capture_on_commit_callbacks):
    themed = consultation_with_themes()
    start(themed, django_capture_on_commit_callbacks)
    body = client.get(
        reverse("consensus:results", args=[themed.slug]), HTTP_ACCEPT_LANGUAGE="fr"
    ).content.decode()
    assert "Résultats de «" in unescape(body) or "Résultats de “" in unescape(body)
    home = client.get(reverse("home"), HTTP_ACCEPT_LANGUAGE="fr").content.decode()
    assert "Concorde, logiciel libre de consultation citoyenne" in unescape(home)
