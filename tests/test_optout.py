"""The opt-out tokens of emails (config/optout.py): links already sent work on, and a token of one
kind of email, or a tampered one, stops nothing of another."""

from django.core import signing

from actions.services import UNFOLLOW_SALT, unfollow_token, unfollow_token_read
from consultations.alerts import stop_token, stop_token_read


def test_an_unfollow_link_sent_before_the_shared_helper_still_reads():
    sent_before = signing.dumps({"a": 12, "u": 34}, salt=UNFOLLOW_SALT, compress=True)
    assert unfollow_token_read(sent_before) == (12, 34)
    # the same payload as before (signing.dumps adds a timestamp, so compare what it carries)
    made_now = unfollow_token(action_id=12, user_id=34)
    assert signing.loads(made_now, salt=UNFOLLOW_SALT) == {"a": 12, "u": 34}


def test_tokens_read_only_as_their_own_kind_and_untampered():
    alert = stop_token(consultation_id=5, user_id=6)
    follow = unfollow_token(action_id=5, user_id=6)
    assert stop_token_read(alert) == (5, 6) and unfollow_token_read(follow) == (5, 6)
    assert stop_token_read(follow) is None and unfollow_token_read(alert) is None
    assert stop_token_read(alert[:-2] + "xx") is None
    assert stop_token_read("") is None and stop_token_read("not-a-token") is None
    unsigned = signing.dumps({"c": "five", "u": 6}, salt="concorde.results-alert.stop")
    assert stop_token_read(unsigned) is None  # signed right, but no id
