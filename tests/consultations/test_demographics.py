"""The sequence's card asking who takes part: age range, gender and postal area, each optional,
asked once per participant when the consultation asks it."""

import pytest
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.test import Client
from django.urls import reverse

from consultations.forms import postal_area_clean
from consultations.models import Exposure, Participant
from consultations.services import (
    SESSION_PARTICIPANT,
    participant_demographics_set,
    participant_merge,
)

from ..factories import ConsultationFactory, ProposalFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("english")]

HX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture(autouse=True)
def _clear_cache():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def consultation():
    consultation = ConsultationFactory(sequence_size=4, ask_demographics=True)
    for i in range(6):
        ProposalFactory(consultation=consultation, content=f"Il faut une proposition {i} pour tous")
    return consultation


def page(response) -> str:
    return " ".join(response.content.decode().split())


def state_of(client, consultation):
    return client.session[f"concorde_sequence:{consultation.pk}"]


def vote_and_next(client, consultation, position):
    """Votes on the card at ``position`` (from 1) and moves on; the response to "next"."""
    proposal_id, token, _pool = state_of(client, consultation)["items"][position - 1]
    url = reverse("consultations:vote", args=[consultation.slug, proposal_id])
    client.post(url, {"key": "agree", "token": token, "from": "sequence"}, **HX)
    next_url = reverse("consultations:sequence_next", args=[consultation.slug])
    return client.post(next_url, {"position": position}, **HX)


def about_you(consultation):
    return reverse("consultations:sequence_demographics", args=[consultation.slug])


def two_cards_in(consultation) -> tuple[Client, str]:
    client = Client()
    client.post(reverse("consultations:sequence", args=[consultation.slug]), **HX)
    assert "2 / 4" in page(vote_and_next(client, consultation, 1))
    return client, page(vote_and_next(client, consultation, 2))


def participant_of(client) -> Participant:
    return Participant.objects.get(session_key=client.session[SESSION_PARTICIPANT])


@pytest.mark.parametrize(
    ("typed", "kept"),
    [
        ("69003", "69"),
        ("97411", "974"),
        ("20000", "20"),
        (" sw1a 1aa ", "SW1A"),
        ("2a", "2A"),
        ("75", "75"),
        ("", ""),
        ("   ", ""),
    ],
)
def test_the_postal_area_kept_is_never_a_whole_postcode(typed, kept):
    assert postal_area_clean(typed) == kept


@pytest.mark.parametrize("typed", ["<script>", "ABCDE1", "75-001", "1234567", "é"])
def test_a_postal_area_that_is_none_is_refused_with_a_clear_message(typed):
    with pytest.raises(ValidationError, match="first two digits of your postcode"):
        postal_area_clean(typed)


def test_the_card_comes_after_the_second_card_and_before_the_third_is_shown(consultation):
    client, html = two_cards_in(consultation)
    assert 'data-card="demographics"' in html and "Who takes part?" in html
    assert "3 / 4" not in html
    # the third card is not displayed yet: not counted as shown
    assert not Exposure.objects.filter(position=3, shown_at__isnull=False).exists()
    response = client.post(
        about_you(consultation), {"age_range": "25-34", "gender": "f", "postal_area": "69003"}, **HX
    )
    assert "3 / 4" in page(response) and 'data-card="vote"' in page(response)
    participant = participant_of(client)
    assert (participant.age_range, participant.gender, participant.postal_area) == (
        "25-34",
        "f",
        "69",
    )
    assert participant.demographics_asked_at is not None
    assert Exposure.objects.filter(position=3, shown_at__isnull=False).count() == 1
    # never asked again, in this sequence or the next
    assert "4 / 4" in page(vote_and_next(client, consultation, 3))
    client.post(reverse("consultations:sequence", args=[consultation.slug]), **HX)
    vote_and_next(client, consultation, 1)
    assert 'data-card="demographics"' not in page(vote_and_next(client, consultation, 2))


def test_skipping_the_questions_keeps_nothing_and_never_asks_again(consultation):
    client, _html = two_cards_in(consultation)
    response = client.post(about_you(consultation), {"decline": "1", "age_range": "65+"}, **HX)
    assert "3 / 4" in page(response)
    participant = participant_of(client)
    assert (participant.age_range, participant.gender, participant.postal_area) == ("", "", "")
    assert participant.demographics_asked_at is not None


def test_answers_left_blank_are_kept_blank(consultation):
    client, _html = two_cards_in(consultation)
    response = client.post(
        about_you(consultation), {"age_range": "", "gender": "m", "postal_area": ""}, **HX
    )
    assert "3 / 4" in page(response)
    participant = participant_of(client)
    assert (participant.age_range, participant.gender, participant.postal_area) == ("", "m", "")


@pytest.mark.parametrize(
    ("answers", "message"),
    [
        ({"postal_area": "<b>Lyon</b>"}, "Write the first two digits of your postcode"),
        ({"age_range": "42"}, "Choose one of the answers offered."),
        ({"gender": "x"}, "Choose one of the answers offered."),
    ],
)
def test_a_bad_answer_shows_the_card_again_and_keeps_nothing(consultation, answers, message):
    client, _html = two_cards_in(consultation)
    response = client.post(about_you(consultation), {"age_range": "18-24", **answers}, **HX)
    html = page(response)
    assert response.status_code == 200  # HTMX swaps the card with its error
    assert 'data-card="demographics"' in html and message in html
    if "postal_area" in answers:
        assert 'aria-invalid="true"' in html and "&lt;b&gt;Lyon&lt;/b&gt;" in html  # kept, escaped
    participant = participant_of(client)
    assert participant.demographics_asked_at is None and participant.age_range == ""
    # without HTMX: the page, with a 400
    plain = client.post(about_you(consultation), answers)
    assert plain.status_code == 400 and message in page(plain)


def test_a_consultation_that_does_not_ask_never_shows_the_card(consultation):
    consultation.ask_demographics = False
    consultation.save(update_fields=["ask_demographics"])
    client, html = two_cards_in(consultation)
    assert "3 / 4" in html and 'data-card="demographics"' not in html
    response = client.post(about_you(consultation), {"age_range": "25-34"}, **HX)
    assert response.status_code == 400
    assert "There is no question to answer here." in page(response)
    assert participant_of(client).age_range == ""


def test_without_javascript_the_answers_redirect_to_the_sequence(consultation):
    client, _html = two_cards_in(consultation)
    response = client.post(about_you(consultation), {"gender": "o"})
    assert response.status_code == 302
    assert response["Location"] == reverse("consultations:sequence", args=[consultation.slug])
    assert "3 / 4" in page(client.get(response["Location"]))


def test_a_participant_merged_at_login_keeps_having_been_asked():
    source = Participant.objects.create(session_key="anonymous")
    participant_demographics_set(participant=source, age_range="50-64")
    source.refresh_from_db()
    target = Participant.objects.create(session_key="user")
    participant_merge(source=source, target=target)
    target.refresh_from_db()
    assert target.age_range == "50-64" and target.demographics_asked_at is not None


def test_the_card_says_the_smallest_group_the_results_show(consultation, settings):
    settings.CONSENSUS_MIN_SEGMENT_SIZE = 25
    _client, html = two_cards_in(consultation)
    assert "only give figures for groups of at least 25 participants." in html
