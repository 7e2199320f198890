"""French and English ship complete: every message of the code and templates is translated."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import polib
import pytest
from django.utils import translation

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("lang", ["fr", "en"])
def test_catalogue_has_no_missing_or_fuzzy_translation(lang):
    po = polib.pofile(str(ROOT / "locale" / lang / "LC_MESSAGES" / "django.po"))
    assert len(po) > 100
    missing = [e.msgid for e in po if not e.translated() and not e.obsolete]
    assert not missing, f"{len(missing)} untranslated in {lang}: {missing[:10]}"
    assert not po.fuzzy_entries()


@pytest.mark.parametrize("lang", ["fr", "en"])
def test_compiled_catalogue_matches_the_sources(lang):
    po = polib.pofile(str(ROOT / "locale" / lang / "LC_MESSAGES" / "django.po"))
    mo = polib.mofile(str(ROOT / "locale" / lang / "LC_MESSAGES" / "django.mo"))
    assert {e.msgid: e.msgstr for e in po.translated_entries() if not e.msgid_plural} == {
        e.msgid: e.msgstr for e in mo if not e.msgid_plural
    }


def test_catalogue_is_up_to_date_with_the_code(tmp_path):
    if not shutil.which("xgettext"):
        pytest.skip("gettext tools are not installed")
    work = tmp_path / "tree"
    shutil.copytree(ROOT, work, ignore=shutil.ignore_patterns(".venv", ".git", "staticfiles", "media", "*.sqlite3"))
    subprocess.run(
        [sys.executable, "manage.py", "makemessages", "-l", "fr", "--no-obsolete",
         "--ignore", "bench/*", "--ignore", "tests/*"],
        cwd=work, check=True, capture_output=True,
    )
    fresh = {e.msgid for e in polib.pofile(str(work / "locale/fr/LC_MESSAGES/django.po"))}
    shipped = {e.msgid for e in polib.pofile(str(ROOT / "locale/fr/LC_MESSAGES/django.po"))}
    assert fresh - shipped == set(), f"run scripts/i18n.sh: new messages {sorted(fresh - shipped)[:10]}"


def test_french_translation_is_used_at_run_time():
    with translation.override("fr"):
        assert translation.gettext("Proposals") == "Propositions"


def test_french_punctuation_keeps_to_its_word():
    """French sets : ; ! ? and « » apart with a space; it must be non-breaking, or a colon
    can start the next line ("Ses propositions les plus représentatives" / ":")."""
    po = polib.pofile(str(ROOT / "locale" / "fr" / "LC_MESSAGES" / "django.po"))
    texts = [e.msgstr for e in po] + [v for e in po for v in e.msgstr_plural.values()]
    breaking = [t for t in texts if re.search(r" [:;!?»]|« ", t)]
    assert not breaking, breaking[:5]
