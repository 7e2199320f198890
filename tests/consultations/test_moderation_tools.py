"""Moderation tools: bulk accept, refusal reasons, the "next" flow, spelling edits with history,
engine assistance (near-duplicates, the idea it would join), public statistics, audit entries."""

from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.core import mail
from django.urls import reverse
from django.utils import timezone

from accounts.models import AuditEntry
from consultations.models import ModeratorAssignment, Proposal, ProposalEdit
from consultations.moderation import (
    ModerationError,
    edit_distance,
    moderation_assistance,
    moderation_bulk_accept,
    moderation_decide,
    moderation_edit,
    moderation_next,
    moderation_public_stats,
)

from ..factories import CauseFactory, ConsultationFactory, ProposalFactory, UserFactory
from .moderation_helpers import run_with_ideas

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("english")]

QUEUE = "/moderation/"


def moderator(*consultations):
    user = UserFactory(is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="moderate_proposal"))
    for consultation in consultations:
        ModeratorAssignment.objects.create(moderator=user, consultation=consultation)
    return user


def pending(consultation, minutes_ago=0, **kwargs):
    kwargs.setdefault("author", UserFactory())
    return ProposalFactory(
        consultation=consultation,
        status="pending",
        created_at=timezone.now() - timedelta(minutes=minutes_ago),
        **kwargs,
    )


@pytest.fixture
def consultation():
    return ConsultationFactory()


# Bulk accept


def test_bulk_accept_writes_one_audit_entry_per_proposal_and_emails(
    consultation, django_capture_on_commit_callbacks
):
    proposals = [pending(consultation, minutes_ago=i) for i in range(3)]
    alice = moderator(consultation)
    with django_capture_on_commit_callbacks(execute=True):
        result = moderation_bulk_accept(moderator=alice, proposal_ids=[p.pk for p in proposals])
    assert {p.pk for p in result.accepted} == {p.pk for p in proposals} and not result.errors
    for proposal in proposals:
        proposal.refresh_from_db()
        assert proposal.status == "accepted" and proposal.moderated_by == alice
        entry = AuditEntry.objects.get(target_id=str(proposal.pk), action="proposal.accept")
        assert entry.actor == alice and entry.note == "bulk"
        assert entry.before["status"] == "pending" and entry.after["status"] == "accepted"
    assert len(mail.outbox) == 3


def test_bulk_accept_leaves_locked_and_decided_proposals_alone(consultation):
    free, held, refused = (pending(consultation, minutes_ago=m) for m in (1, 2, 3))
    refused.status, refused.refusal_reason = "refused", "off_topic"
    refused.save()
    alice, bob = moderator(consultation), moderator(consultation)
    assert moderation_next(moderator=bob) == held  # the oldest pending one
    result = moderation_bulk_accept(moderator=alice, proposal_ids=[free.pk, held.pk, refused.pk])
    assert [p.pk for p in result.accepted] == [free.pk]
    errors = dict(result.errors)
    assert "Another moderator" in errors[held.pk] and "no longer pending" in errors[refused.pk]
    held.refresh_from_db(), refused.refresh_from_db()
    assert held.status == "pending" and refused.status == "refused"
    assert AuditEntry.objects.filter(action="proposal.accept").count() == 1


@pytest.mark.parametrize("ids", [[], ["abc"], None])
def test_bulk_accept_bad_input_is_an_error(client, consultation, ids):
    proposal = pending(consultation)
    alice = moderator(consultation)
    with pytest.raises(ModerationError):
        moderation_bulk_accept(moderator=alice, proposal_ids=ids or [])
    client.force_login(alice)
    response = client.post(reverse("moderation:bulk"), {"ids": ids} if ids else {})
    assert response.status_code == 400
    proposal.refresh_from_db()
    assert proposal.status == "pending"


def test_bulk_accept_through_the_list_page(client, consultation):
    proposals = [pending(consultation, minutes_ago=i) for i in range(4)]
    client.force_login(moderator(consultation))
    page = client.get(reverse("moderation:list"), {"c": consultation.slug})
    html = page.content.decode()
    assert all(p.content in html for p in proposals) and 'name="ids"' in html
    response = client.post(
        reverse("moderation:bulk"),
        {"ids": [proposals[0].pk, proposals[1].pk], "c": consultation.slug},
    )
    assert response.status_code == 302 and consultation.slug in response["Location"]
    statuses = sorted(
        Proposal.objects.filter(pk__in=[p.pk for p in proposals]).values_list("status", flat=True)
    )
    assert statuses == ["accepted", "accepted", "pending", "pending"]


# Refusal reasons and audit


def test_refusal_with_reason_is_audited(consultation):
    proposal = pending(consultation)
    alice = moderator(consultation)
    moderation_decide(moderator=alice, proposal=proposal, decision="refuse", reason="advertising")
    entry = AuditEntry.objects.get(action="proposal.refuse")
    assert entry.actor == alice and entry.target_id == str(proposal.pk)
    assert entry.after["refusal_reason"] == "advertising" and entry.before["refusal_reason"] == ""


def test_unknown_reason_through_the_page_is_400_and_unaudited(client, consultation):
    proposal = pending(consultation)
    client.force_login(moderator(consultation))
    client.get(QUEUE)
    response = client.post(
        reverse("moderation:decide", args=[proposal.pk]),
        {"decision": "refuse", "reason": "ugly"},
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 400 and response["HX-Retarget"] == "#htmx-alerts"
    proposal.refresh_from_db()
    assert proposal.status == "pending" and not AuditEntry.objects.exists()


def test_stale_lock_taken_over_by_another_moderator_is_refused(client, consultation):
    proposal = pending(consultation)
    alice, bob = moderator(consultation), moderator(consultation)
    client.force_login(alice)
    client.get(QUEUE)  # alice holds it...
    Proposal.objects.filter(pk=proposal.pk).update(
        locked_until=timezone.now() - timedelta(seconds=1)
    )  # ...her lock expires, and bob takes it over
    assert moderation_next(moderator=bob) == proposal
    response = client.post(reverse("moderation:decide", args=[proposal.pk]), {"decision": "accept"})
    assert response.status_code == 400 and "Another moderator" in response.content.decode()
    proposal.refresh_from_db()
    assert proposal.status == "pending" and proposal.locked_by == bob


# The "next proposal" flow


def test_skip_releases_the_lock_and_moves_to_the_next(client, consultation):
    first, second = pending(consultation, minutes_ago=20), pending(consultation, minutes_ago=10)
    alice = moderator(consultation)
    client.force_login(alice)
    assert first.content in client.get(QUEUE).content.decode()
    response = client.post(reverse("moderation:skip", args=[first.pk]), HTTP_HX_REQUEST="true")
    html = response.content.decode()
    assert response.status_code == 200 and second.content in html and "Skipped" in html
    assert "You skipped 1 proposal" in html
    first.refresh_from_db()
    assert first.locked_by is None and first.status == "pending"
    assert AuditEntry.objects.get(action="proposal.skip").target_id == str(first.pk)
    # Another moderator gets the skipped one; "show them again" brings it back to alice.
    assert moderation_next(moderator=moderator(consultation)) == first
    first.locked_until = None
    first.locked_by = None
    first.save()
    html = client.get(QUEUE, {"reset_skips": "1"}).content.decode()
    assert "You skipped" not in html


def test_reload_keeps_the_proposal_held_and_likely_refusals_order(consultation):
    from consultations.models import ModerationClassifier, ProposalPrediction

    old, fresh = pending(consultation, minutes_ago=30), pending(consultation, minutes_ago=1)
    classifier = ModerationClassifier.objects.create(consultation=consultation, model=b"")
    ProposalPrediction.objects.create(proposal=fresh, classifier=classifier, refuse_probability=0.9)
    ProposalPrediction.objects.create(proposal=old, classifier=classifier, refuse_probability=0.1)
    alice = moderator(consultation)
    assert moderation_next(moderator=alice, order="refusals") == fresh
    assert moderation_next(moderator=alice) == fresh  # held: a reload does not take a second one


# Spelling edits


def test_edit_distance():
    assert edit_distance("musés", "musées") == 1
    assert edit_distance("abc", "abc") == 0
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance("a" * 10, "b" * 30, limit=5) == 6


def test_spelling_edit_keeps_history_and_audit(client, consultation):
    proposal = pending(
        consultation, content="Il faut ouvrir les musés le soir pour les travailleur"
    )
    alice = moderator(consultation)
    client.force_login(alice)
    client.get(QUEUE)
    fixed = "Il faut ouvrir les musées le soir pour les travailleurs"
    response = client.post(
        reverse("moderation:edit", args=[proposal.pk]), {"content": fixed}, HTTP_HX_REQUEST="true"
    )
    html = response.content.decode()
    assert response.status_code == 200 and "Spelling corrected" in html
    assert (
        "<del>Il faut ouvrir les musés" in html and "<ins>" + fixed in html
    )  # history on the page
    proposal.refresh_from_db()
    assert proposal.content == fixed and proposal.status == "pending"
    edit = ProposalEdit.objects.get()
    assert (edit.editor, edit.before, edit.after, edit.distance) == (
        alice,
        "Il faut ouvrir les musés le soir pour les travailleur",
        fixed,
        2,
    )
    entry = AuditEntry.objects.get(action="proposal.edit")
    assert entry.before["content"] == edit.before and entry.after["content"] == fixed
    # The admin shows the history on the proposal and in its own list.
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    page = client.get(reverse("admin:consultations_proposal_change", args=[proposal.pk]))
    assert page.status_code == 200 and "Il faut ouvrir les musés le soir" in page.content.decode()
    listing = client.get(reverse("admin:consultations_proposaledit_changelist"))
    assert listing.status_code == 200 and fixed in listing.content.decode()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("Il faut fermer tous les musées le dimanche et le soir", "Only spelling may be corrected"),
        ("", "Write the corrected text"),
        ("Il faut ouvrir les musées le soir", "Nothing was changed"),
    ],
)
def test_edits_beyond_spelling_are_refused(client, consultation, content, message):
    original = "Il faut ouvrir les musées le soir"
    proposal = pending(consultation, content=original)
    client.force_login(moderator(consultation))
    response = client.post(reverse("moderation:edit", args=[proposal.pk]), {"content": content})
    assert response.status_code == 400 and message in response.content.decode()
    proposal.refresh_from_db()
    assert proposal.content == original
    assert not ProposalEdit.objects.exists() and not AuditEntry.objects.exists()


def test_edit_of_a_proposal_locked_by_someone_else_is_refused(consultation):
    proposal = pending(consultation, content="Il faut des pistes cyclabes")
    alice, bob = moderator(consultation), moderator(consultation)
    moderation_next(moderator=bob)
    with pytest.raises(ModerationError, match="Another moderator"):
        moderation_edit(moderator=alice, proposal=proposal, content="Il faut des pistes cyclables")


# Engine assistance


def test_assistance_without_engine_run_uses_trigrams(consultation):
    published = ProposalFactory(
        consultation=consultation, content="Il faut ouvrir les bibliothèques le dimanche"
    )
    ProposalFactory(consultation=consultation, content="Il faut planter des arbres en ville")
    proposal = pending(consultation, content="Il faut ouvrir les bibliothèques le dimanche matin")
    assistance = moderation_assistance(proposal=proposal)
    assert assistance.method == "trigram"
    assert [p.pk for p, _sim in assistance.neighbours][:1] == [published.pk]
    assert assistance.idea is None


def test_assistance_never_names_an_idea_staff_emptied(consultation):
    from consensus.models import Idea, IdeaMembership

    run = run_with_ideas(
        consultation,
        [
            ("Libraries open on Sundays", ["Il faut ouvrir les bibliothèques le dimanche"] * 3),
            ("Trees in cities", ["Il faut planter des arbres dans les villes"] * 3),
        ],
    )
    libraries, trees = Idea.objects.filter(run=run).order_by("number")
    # staff moved every proposal of the libraries idea into the trees one
    IdeaMembership.objects.filter(idea=libraries).update(idea=trees)
    Idea.objects.filter(pk=libraries.pk).update(size=0)
    Idea.objects.filter(pk=trees.pk).update(size=6)

    proposal = pending(consultation, content="Il faut ouvrir les bibliothèques le dimanche soir")
    assistance = moderation_assistance(proposal=proposal)
    assert assistance.method == "embeddings"
    assert assistance.idea == trees  # where its nearest neighbours are now, not the empty idea


def test_assistance_never_distils_the_static_model_in_a_request(consultation, monkeypatch, tmp_path):
    from consensus.engine import embedders

    run = run_with_ideas(consultation, [("Trees", ["Il faut planter des arbres en ville"] * 3)])
    run.metrics = {"ideas_model": "static"}
    run.save()
    monkeypatch.setenv("CONCORDE_STATIC_MODEL_DIR", str(tmp_path / "static"))
    monkeypatch.setitem(embedders._CACHE, "static", embedders.StaticEmbedder())
    proposal = pending(consultation, content="Il faut planter des arbres en ville demain")
    assistance = moderation_assistance(proposal=proposal)
    assert assistance.method == "trigram"  # fell back, quickly
    assert not (tmp_path / "static").exists()  # nothing was built


def test_assistance_with_an_engine_run_uses_embeddings_and_names_the_idea(client, consultation):
    run_with_ideas(
        consultation,
        [
            (
                "Libraries open on Sundays",
                [
                    "Il faut ouvrir les bibliothèques le dimanche",
                    "Il faut ouvrir les bibliothèques le dimanche après-midi",
                    "Il faut des bibliothèques ouvertes le dimanche",
                ],
            ),
            (
                "Trees in cities",
                [
                    "Il faut planter des arbres dans les villes",
                    "Il faut planter plus d'arbres en ville",
                    "Il faut des arbres dans chaque rue",
                ],
            ),
        ],
    )
    proposal = pending(consultation, content="Il faut ouvrir les bibliothèques le dimanche soir")
    assistance = moderation_assistance(proposal=proposal)
    assert assistance.method == "embeddings"
    assert assistance.idea.label == "Libraries open on Sundays"
    assert "bibliothèques" in assistance.neighbours[0][0].content
    assert all(sim >= 0.5 for _p, sim in assistance.neighbours)
    client.force_login(moderator(consultation))
    html = client.get(QUEUE).content.decode()
    assert "Would join the idea:" in html and "Libraries open on Sundays" in html
    assert "From the embeddings of the current engine run." in html


# Public statistics


def test_public_statistics_counts_reasons_and_median_delay(client, consultation):
    now = timezone.now()
    delays_hours = [1, 3, 5, 10]
    for i, hours in enumerate(delays_hours):
        ProposalFactory(
            consultation=consultation,
            status="accepted" if i % 2 else "refused",
            refusal_reason="" if i % 2 else "off_topic",
            created_at=now - timedelta(hours=hours + 1),
            moderated_at=now - timedelta(hours=1),
        )
    pending(consultation)
    stats = moderation_public_stats(consultation=consultation)
    counts = {row["value"]: row["count"] for row in stats["statuses"]}
    assert counts["accepted"] == 2 and counts["refused"] == 2 and counts["pending"] == 1
    assert stats["reasons"] == [
        {"value": "off_topic", "label": "Off topic", "count": 2, "share": 1.0}
    ]
    expected = sorted(delays_hours)
    median = (expected[1] + expected[2]) / 2
    assert stats["median_delay_seconds"] == pytest.approx(median * 3600, abs=2)
    assert stats["decided"] == 4
    page = client.get(
        reverse("consultations:moderation_stats", args=[consultation.slug])
    )  # anonymous
    html = page.content.decode()
    assert page.status_code == 200 and "Off topic" in html and f"{median:.1f} h" in html


def test_public_statistics_are_cached_and_cleared_by_a_decision(consultation, settings):
    settings.CONCORDE_MODERATION_STATS_CACHE_SECONDS = 600
    proposal = pending(consultation)
    assert moderation_public_stats(consultation=consultation)["refused"] == 0
    Proposal.objects.filter(pk=proposal.pk).update(status="refused", refusal_reason="test")
    assert moderation_public_stats(consultation=consultation)["refused"] == 0  # cached
    other = pending(consultation)
    alice = moderator(consultation)
    from django.test import TestCase

    with TestCase.captureOnCommitCallbacks(execute=True):
        moderation_decide(moderator=alice, proposal=other, decision="refuse", reason="test")
    assert moderation_public_stats(consultation=consultation)["refused"] == 2


def test_public_statistics_of_a_private_consultation_are_404(client):
    private = ConsultationFactory(cause=CauseFactory(kind="private_consultation"))
    assert (
        client.get(reverse("consultations:moderation_stats", args=[private.slug])).status_code
        == 404
    )
    assert client.get(reverse("consultations:moderation_stats", args=["nope"])).status_code == 404


# Hot pages stay within a fixed number of queries, whatever the queue's size


@pytest.mark.parametrize("size", [3, 30])
def test_queue_and_list_pages_query_count_does_not_grow_with_the_queue(
    client, consultation, size, django_assert_max_num_queries
):
    for i in range(size):
        pending(consultation, minutes_ago=i)
    client.force_login(moderator(consultation))
    client.get(QUEUE)  # warm the session and the assistance cache
    with django_assert_max_num_queries(18):  # 16 measured: session, scope, lock, counts, ...
        assert client.get(QUEUE, {"c": consultation.slug}).status_code == 200
    with django_assert_max_num_queries(12):  # 10 measured
        assert client.get(reverse("moderation:list")).status_code == 200
