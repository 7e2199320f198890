"""The "my data" page: download everything, or erase the account after confirmation."""

import json

import pytest
from django.urls import reverse

from accounts.models import User
from consultations.models import Participant, Vote
from consultations.services import counters_recount
from tests.factories import UserFactory

from .gdpr import counters_state, find_everywhere, make_citizen

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("english")]

PASSWORD = "correct horse battery"  # tests/factories.py
MY_DATA = "/accounts/my-data/"
DOWNLOAD = "/accounts/my-data/download/"
ERASE = "/accounts/my-data/erase/"


def test_urls_are_where_the_templates_link():
    assert reverse("accounts:my_data") == MY_DATA
    assert reverse("accounts:my_data_download") == DOWNLOAD
    assert reverse("accounts:erase") == ERASE


def test_the_page_shows_what_is_held_and_both_forms(client):
    citizen = make_citizen()
    client.force_login(citizen.user)
    html = client.get(MY_DATA).content.decode()
    assert "My data" in html and DOWNLOAD in html and f'action="{ERASE}"' in html
    assert 'name="confirm_email"' in html and 'name="password"' in html
    assert "remain counted" in html
    home = client.get("/").content.decode()
    assert MY_DATA in home  # reachable from the navigation bar


@pytest.mark.parametrize("url", [MY_DATA, DOWNLOAD])
def test_anonymous_visitors_are_sent_to_log_in(client, url):
    response = client.get(url)
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_the_download_holds_every_piece_of_the_persons_data(client):
    citizen = make_citizen()
    client.force_login(citizen.user)
    response = client.get(DOWNLOAD)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/json")
    assert response["Content-Disposition"].startswith("attachment;")
    data = json.loads(response.content)
    assert data["account"]["email"] == citizen.user.email
    assert data["account"]["display_name"] == citizen.user.display_name
    assert data["account"]["email_addresses"] == [
        {"email": citizen.user.email, "verified": True, "primary": True}
    ]
    assert data["participant"]["age_range"] == "25-34" and data["participant"]["postal_area"] == "75011"
    votes = {v["proposal_id"]: v for v in data["votes"]}
    assert set(votes) == {p.pk for p in citizen.voted}
    assert {v["vote"] for v in votes.values()} == {"agree", "disagree", "neutral"}
    assert votes[citizen.voted[0].pk]["qualifications"] == ["like_it"]
    assert votes[citizen.voted[2].pk]["qualifications"] == []
    assert [p["id"] for p in data["proposals"]] == [citizen.own_proposal.pk]
    assert len(data["follows"]) == 1 and len(data["partner_memberships"]) == 1
    assert data["private_consultation_memberships"] == [
        {"cause": citizen.own_proposal.consultation.cause.title,
         "slug": citizen.own_proposal.consultation.cause.slug}
    ]  # fmt: skip
    # nobody else's data, and no secret
    assert "password" not in json.dumps(data["account"])
    assert citizen.participant.session_key not in response.content.decode()


def test_the_download_of_a_new_account_is_valid_and_empty(client):
    user = UserFactory()
    client.force_login(user)
    data = json.loads(client.get(DOWNLOAD).content)
    assert data["participant"] is None and data["votes"] == [] and data["proposals"] == []


def test_erasure_with_the_right_confirmation_logs_out_and_keeps_the_votes(client):
    citizen = make_citizen()
    ids = [p.pk for p in citizen.proposals + [citizen.own_proposal]]
    before = counters_state(ids)
    client.force_login(citizen.user)
    client.get(MY_DATA)
    response = client.post(
        ERASE, {"confirm_email": citizen.user.email.upper(), "password": PASSWORD}, follow=True
    )
    assert response.redirect_chain[-1][0] == "/"
    assert "Your account has been deleted" in response.content.decode()
    assert not response.context["user"].is_authenticated
    assert not User.objects.filter(pk=citizen.user.pk).exists()
    assert find_everywhere(citizen.needles) == []
    assert Vote.objects.filter(participant=citizen.participant).count() == len(citizen.voted)
    assert counters_state(ids) == before
    assert counters_recount(proposal_ids=ids) == {"counters_fixed": 0, "totals_fixed": 0}


@pytest.mark.parametrize(
    "data, error",
    [
        ({"confirm_email": "someone.else@example.net", "password": PASSWORD}, "not the e-mail address"),
        ({"confirm_email": "", "password": PASSWORD}, "This field is required"),
        ({"password": PASSWORD}, "This field is required"),
        ({"confirm_email": "EMAIL", "password": "wrong password"}, "Wrong password"),
        ({"confirm_email": "EMAIL"}, "This field is required"),
        ({"confirm_email": "EMAIL", "password": PASSWORD * 200}, "Wrong password"),
    ],
)
def test_a_wrong_confirmation_deletes_nothing(client, data, error):
    user = UserFactory()
    participant = Participant.objects.create(user=user, age_range="35-49")
    data = {k: (user.email if v == "EMAIL" else v) for k, v in data.items()}
    client.force_login(user)
    response = client.post(ERASE, data)
    assert response.status_code == 400
    assert error in response.content.decode()
    assert User.objects.filter(pk=user.pk).exists()
    participant.refresh_from_db()
    assert participant.user_id == user.pk and participant.age_range == "35-49"
    assert client.get(MY_DATA).status_code == 200  # still logged in


def test_an_account_without_password_confirms_with_its_email(client):
    user = UserFactory()
    user.set_unusable_password()
    user.save()
    client.force_login(user)
    assert 'name="password"' not in client.get(MY_DATA).content.decode()
    assert client.post(ERASE, {"confirm_email": user.email}).status_code == 302
    assert not User.objects.filter(pk=user.pk).exists()


def test_get_on_the_erase_url_deletes_nothing(client):
    user = UserFactory()
    client.force_login(user)
    response = client.get(ERASE, {"confirm_email": user.email, "password": PASSWORD})
    assert response.status_code == 405
    assert User.objects.filter(pk=user.pk).exists()


def test_anonymous_post_on_the_erase_url_deletes_nothing(client):
    user = UserFactory()
    count = User.objects.count()
    response = client.post(ERASE, {"confirm_email": user.email, "password": PASSWORD})
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]
    assert User.objects.count() == count


def test_the_erase_form_needs_the_csrf_token(client):
    from django.test import Client

    user = UserFactory()
    csrf_client = Client(enforce_csrf_checks=True)
    csrf_client.force_login(user)
    response = csrf_client.post(ERASE, {"confirm_email": user.email, "password": PASSWORD})
    assert response.status_code == 403
    assert User.objects.filter(pk=user.pk).exists()


def test_the_download_takes_a_fixed_number_of_queries(client, django_assert_max_num_queries):
    from consultations.services import participant_for_user, vote_cast
    from tests.factories import ProposalFactory

    citizen = make_citizen()
    participant = participant_for_user(user=citizen.user)
    for proposal in ProposalFactory.create_batch(30):
        vote_cast(participant=participant, proposal=proposal, key="agree")
    client.force_login(citizen.user)
    with django_assert_max_num_queries(16):
        data = json.loads(client.get(DOWNLOAD).content)
    assert len(data["votes"]) == len(citizen.voted) + 30
