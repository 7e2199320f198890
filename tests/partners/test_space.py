"""Who sees and changes what in the partner and sponsor space."""

import datetime
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from django.utils import timezone, translation

from actions import forms as action_forms
from actions.models import Action, ActionPlan, ActionUpdate, Measurement
from partners.models import Partner, PartnerMembership

from ..actions.factories import (
    ActionFactory,
    ActionPlanFactory,
    MembershipFactory,
    ObjectiveFactory,
)
from ..factories import CauseFactory, PartnerFactory, UserFactory

pytestmark = pytest.mark.django_db

PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    return tmp_path


@pytest.fixture
def world():
    """Partner A (editor, viewer), partner B, a sponsor funding A's action, a citizen, staff."""
    cause = CauseFactory(slug="culture")
    published = ActionPlanFactory(cause=cause, title="Plan public")
    draft_plan = ActionPlanFactory(cause=cause, title="Plan en préparation", status="draft")
    a, b = PartnerFactory(name="Ville A"), PartnerFactory(name="Asso B")
    sponsor = PartnerFactory(name="Mécène S", kind="sponsor")
    w = {
        "a_action": ActionFactory(plan=published, owner=a, title="Action publique de A"),
        "a_draft": ActionFactory(plan=draft_plan, owner=a, title="Brouillon de A", status="draft"),
        "b_action": ActionFactory(plan=published, owner=b, title="Action publique de B"),
        "b_draft": ActionFactory(plan=draft_plan, owner=b, title="Brouillon de B", status="draft"),
    }
    w["a_action"].funders.add(sponsor)
    for key in ("a_action", "a_draft", "b_action", "b_draft"):
        w[key + "_objective"] = ObjectiveFactory(
            action=w[key], baseline=Decimal(0), target=Decimal(200)
        )
    w["a_editor"] = MembershipFactory(partner=a).user
    w["a_viewer"] = MembershipFactory(partner=a, role=PartnerMembership.Role.VIEWER).user
    w["b_editor"] = MembershipFactory(partner=b).user
    w["sponsor"] = MembershipFactory(partner=sponsor).user
    w["citizen"] = UserFactory()
    w["staff"] = UserFactory(is_staff=True)
    return w


def space_url():
    return reverse("partners:space")


def action_url(action):
    return reverse("partners:space_action", args=[action.pk])


def measure_url(objective):
    return reverse("partners:space_measurement", args=[objective.pk])


def status_url(action):
    return reverse("partners:space_status", args=[action.pk])


def measurement_data(objective, **overrides):
    prefix = f"o{objective.pk}-"
    data = {"value": "50", "measured_on": timezone.localdate().isoformat(), "note": "Relevé"}
    data.update(overrides)
    return {prefix + k: v for k, v in data.items()}


def status_data(action, **overrides):
    data = {"status": "done", "note": ""}
    data.update(overrides)
    return {f"a{action.pk}-{k}": v for k, v in data.items()}


def titles_in(response):
    html = response.content.decode()
    return {
        t
        for t in (
            "Action publique de A",
            "Brouillon de A",
            "Action publique de B",
            "Brouillon de B",
        )
        if t in html
    }


# --- Who gets in ------------------------------------------------------------------------------


def test_anonymous_is_sent_to_login_and_changes_nothing(client, world):
    for response in (
        client.get(space_url()),
        client.get(action_url(world["a_action"])),
        client.post(
            measure_url(world["a_action_objective"]), measurement_data(world["a_action_objective"])
        ),
        client.post(status_url(world["a_action"]), status_data(world["a_action"])),
    ):
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("account_login"))
    assert not Measurement.objects.exists() and not ActionUpdate.objects.exists()


def test_citizen_is_refused_and_changes_nothing(client, world):
    client.force_login(world["citizen"])
    response = client.get(space_url())
    assert response.status_code == 403
    assert "Action publique de A" not in response.content.decode()
    assert client.get(action_url(world["a_action"])).status_code == 403
    objective = world["a_action_objective"]
    assert client.post(measure_url(objective), measurement_data(objective)).status_code == 404
    assert (
        client.post(status_url(world["a_action"]), status_data(world["a_action"])).status_code
        == 404
    )
    assert not Measurement.objects.exists() and not ActionUpdate.objects.exists()


def test_partner_a_sees_its_actions_and_drafts_but_nothing_of_b(client, world):
    client.force_login(world["a_editor"])
    response = client.get(space_url())
    assert response.status_code == 200
    assert titles_in(response) == {"Action publique de A", "Brouillon de A"}
    assert client.get(action_url(world["a_draft"])).status_code == 200
    assert client.get(action_url(world["b_action"])).status_code == 404
    assert client.get(action_url(world["b_draft"])).status_code == 404


def test_partner_b_sees_only_its_own(client, world):
    client.force_login(world["b_editor"])
    assert titles_in(client.get(space_url())) == {"Action publique de B", "Brouillon de B"}
    assert client.get(action_url(world["a_draft"])).status_code == 404


def test_staff_see_every_action_and_may_change_any(client, world):
    client.force_login(world["staff"])
    assert titles_in(client.get(space_url())) == {
        "Action publique de A",
        "Brouillon de A",
        "Action publique de B",
        "Brouillon de B",
    }
    objective = world["b_draft_objective"]
    assert client.post(measure_url(objective), measurement_data(objective)).status_code == 302
    assert Measurement.objects.get().entered_by == world["staff"]


def test_sponsor_sees_the_action_it_funds_read_only(client, world):
    client.force_login(world["sponsor"])
    response = client.get(space_url())
    assert titles_in(response) == {"Action publique de A"}
    page = client.get(action_url(world["a_action"]))
    assert page.status_code == 200
    assert "<form" not in page.content.decode().split('id="main"')[1]  # no measurement form
    objective = world["a_action_objective"]
    assert client.post(measure_url(objective), measurement_data(objective)).status_code == 404
    assert (
        client.post(status_url(world["a_action"]), status_data(world["a_action"])).status_code
        == 404
    )
    assert not Measurement.objects.exists()


def test_viewer_account_reads_but_cannot_post(client, world):
    client.force_login(world["a_viewer"])
    assert client.get(action_url(world["a_action"])).status_code == 200
    objective = world["a_action_objective"]
    assert client.post(measure_url(objective), measurement_data(objective)).status_code == 404
    assert not Measurement.objects.exists()


# --- Posting measurements ------------------------------------------------------------------


def test_partner_posts_a_measurement_and_the_public_page_shows_it(client, world):
    client.force_login(world["a_editor"])
    objective = world["a_action_objective"]
    response = client.post(measure_url(objective), measurement_data(objective, value="50"))
    assert response.status_code == 302
    assert response["Location"] == action_url(world["a_action"])
    measurement = Measurement.objects.get()
    assert (measurement.objective, measurement.value) == (objective, Decimal(50))
    assert measurement.entered_by == world["a_editor"]
    html = client.get(reverse("actions:cause", args=["culture"])).content.decode()
    assert "25&nbsp;%" in html  # 50 of 200


def test_forged_post_to_another_partners_objective_is_404(client, world):
    client.force_login(world["a_editor"])
    for key in ("b_action_objective", "b_draft_objective"):
        objective = world[key]
        assert client.post(measure_url(objective), measurement_data(objective)).status_code == 404
        # Even with A's own field prefix the URL decides, and the URL is B's.
        forged = measurement_data(world["a_action_objective"])
        assert client.post(measure_url(objective), forged).status_code == 404
    missing = reverse("partners:space_measurement", args=[999999])
    assert client.post(missing, {}).status_code == 404
    assert (
        client.post(status_url(world["b_action"]), status_data(world["b_action"])).status_code
        == 404
    )
    assert not Measurement.objects.exists()
    assert Action.objects.get(pk=world["b_action"].pk).status == Action.Status.IN_PROGRESS


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"value": "beaucoup"}, "value", "number"),
        ({"value": ""}, "value", "required"),
        ({"value": "NaN"}, "value", "number"),
        ({"value": "1e30"}, "value", "digits"),
        ({"measured_on": "2999-01-01"}, "measured_on", "future"),
        (
            {"measured_on": (timezone.localdate() + datetime.timedelta(days=1)).isoformat()},
            "measured_on",
            "future",
        ),
        ({"measured_on": "pas une date"}, "measured_on", "valid date"),
        ({"evidence_url": "javascript:alert(1)"}, "evidence_url", "valid URL"),
    ],
)
def test_bad_measurement_input_shows_an_error_and_stores_nothing(
    client, world, overrides, field, message
):
    client.force_login(world["a_editor"])
    objective = world["a_action_objective"]
    response = client.post(measure_url(objective), measurement_data(objective, **overrides))
    assert response.status_code == 400
    [item] = [o for o in response.context["objectives"] if o["row"].objective == objective]
    with translation.override("en"):  # Django's own messages are translated into French
        errors = " ".join(item["form"].errors[field])
    assert message in errors
    assert "errorlist" in response.content.decode()
    assert not Measurement.objects.exists()


def test_evidence_file_is_stored_under_a_random_name(client, world, media_root):
    client.force_login(world["a_editor"])
    objective = world["a_action_objective"]
    data = measurement_data(objective)
    data[f"o{objective.pk}-evidence_file"] = SimpleUploadedFile(
        "../../rapport final.PDF", PDF, content_type="application/pdf"
    )
    assert client.post(measure_url(objective), data).status_code == 302
    stored = Measurement.objects.get().evidence_file
    assert stored.name.startswith("evidence/") and stored.name.endswith(".pdf")
    assert "rapport" not in stored.name
    assert (media_root / stored.name).read_bytes() == PDF


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("page.html", b"<html><script>alert(1)</script></html>", "not accepted"),
        ("rapport.pdf", b"MZ\x90\x00 this is an executable", "not accepted"),  # renamed
        ("image.svg", b"<svg xmlns='http://www.w3.org/2000/svg'/>", "not accepted"),
        ("sans-extension", PDF, "not accepted"),
        ("gros.pdf", PDF + b"0" * (action_forms.EVIDENCE_MAX_BYTES + 1), "too large"),
    ],
)
def test_bad_evidence_file_is_refused(client, world, media_root, name, content, message):
    client.force_login(world["a_editor"])
    objective = world["a_action_objective"]
    data = measurement_data(objective)
    data[f"o{objective.pk}-evidence_file"] = SimpleUploadedFile(name, content)
    response = client.post(measure_url(objective), data)
    assert response.status_code == 400
    [item] = [o for o in response.context["objectives"] if o["row"].objective == objective]
    with translation.override("en"):
        assert message in " ".join(item["form"].errors["evidence_file"])
    assert not Measurement.objects.exists()
    assert not list(media_root.rglob("*.*"))


def test_htmx_post_swaps_only_the_objective_card(client, world):
    client.force_login(world["a_editor"])
    objective = world["a_action_objective"]
    response = client.post(
        measure_url(objective), measurement_data(objective, value="100"), HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 200
    html = response.content.decode()
    assert "<html" not in html
    assert f'id="objective-card-{objective.pk}"' in html and "50&nbsp;%" in html
    assert 'id="action-summary" hx-swap-oob="true"' in html  # the action's bar moves too
    assert "HX-Request" in response["Vary"]
    bad = client.post(
        measure_url(objective), measurement_data(objective, value="x"), HTTP_HX_REQUEST="true"
    )
    assert bad.status_code == 200 and "errorlist" in bad.content.decode()
    assert Measurement.objects.count() == 1


def test_get_on_a_post_endpoint_is_refused(client, world):
    client.force_login(world["a_editor"])
    assert client.get(measure_url(world["a_action_objective"])).status_code == 405


# --- Status updates ------------------------------------------------------------------------


def test_partner_posts_a_status_update(client, world):
    client.force_login(world["a_editor"])
    action = world["a_action"]
    response = client.post(status_url(action), status_data(action, status="done", note="Fini !"))
    assert response.status_code == 302
    action.refresh_from_db()
    assert action.status == Action.Status.DONE
    update = ActionUpdate.objects.get()
    assert (update.previous_status, update.status, update.note) == ("in_progress", "done", "Fini !")
    assert "Fini !" in client.get(action.get_absolute_url()).content.decode()


@pytest.mark.parametrize(
    "overrides", [{"status": "in_progress", "note": ""}, {"status": "draft"}, {"status": "gone"}]
)
def test_bad_status_update_is_refused(client, world, overrides):
    client.force_login(world["a_editor"])
    action = world["a_action"]
    response = client.post(status_url(action), status_data(action, **overrides))
    assert response.status_code == 400
    assert "errorlist" in response.content.decode()
    assert not ActionUpdate.objects.exists()
    action.refresh_from_db()
    assert action.status == Action.Status.IN_PROGRESS


def test_draft_plan_actions_stay_off_public_pages(client, world):
    html = client.get(reverse("actions:cause", args=["culture"])).content.decode()
    assert "Action publique de A" in html and "Action publique de B" in html
    assert "Brouillon" not in html and "Plan en préparation" not in html
    assert client.get(world["a_draft"].get_absolute_url()).status_code == 404
    assert ActionPlan.objects.filter(status="draft").count() == 1


def test_partner_slug_cannot_shadow_the_space():
    partner = Partner(name="Space", slug="space")
    with pytest.raises(ValidationError):
        partner.full_clean()


def test_space_pages_run_a_bounded_number_of_queries(client, world, django_assert_max_num_queries):
    partner = world["a_action"].owner
    for _ in range(20):
        action = ActionFactory(owner=partner, plan=world["a_action"].plan)
        for _ in range(2):
            ObjectiveFactory(action=action)
    client.force_login(world["a_editor"])
    with django_assert_max_num_queries(10):
        response = client.get(space_url())
    assert len(response.context["rows"]) == 22
    with django_assert_max_num_queries(14):
        assert client.get(action_url(world["a_action"])).status_code == 200


def test_partner_page_links_members_to_their_space(client, world):
    partner_url = world["a_action"].owner.get_absolute_url()
    assert space_url() not in client.get(partner_url).content.decode()
    client.force_login(world["a_editor"])
    assert space_url() in client.get(partner_url).content.decode()
