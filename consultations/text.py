"""Plain-text helpers for proposals: the prefix, HTML detection, words and keywords.

No Django models here, so the rules are easy to test on strings.
"""

import re
import unicodedata
from collections import Counter
from functools import lru_cache

# Anything that an HTML parser would take for a tag, a comment or a doctype: "<b>", "</p>",
# "<!--", "<?xml", "<img src=x". A lone "<" before a space or a digit ("a < b", "<3") is text.
HTML_TAG = re.compile(r"<\s*[/!?]?\s*[a-zA-Z!?]")
WORD = re.compile(r"[^\W\d_]+", re.UNICODE)

# Words too common to say what a proposal is about (French and English).
STOPWORDS = frozenset(
    """
    il faut faudrait doit doivent devrait pouvoir peut peuvent etre avoir fait faire
    le la les un une des du de d l au aux a et ou mais donc or ni car que qui quoi dont
    ce cet cette ces son sa ses leur leurs nos notre vos votre mon ma mes ton ta tes
    en dans par pour sur sous avec sans entre vers chez comme plus moins tres tout tous
    toute toutes autre autres meme aussi ainsi afin lors quand si ne pas plus y on nous
    vous ils elles est sont ont sera seront etait avant apres chaque tout mettre
    the a an and or but of to in on for with without by at from as is are be been
    should must need needs we our you your they their it its this that these those
    more less all any each every other make have has not no
    """.split()
)


def strip_prefix(text: str, prefix: str) -> str:
    """``text`` without ``prefix`` at its start (case-insensitive), stripped."""
    text = " ".join(text.split())
    if prefix and text.casefold().startswith(prefix.casefold()):
        return text[len(prefix) :].strip()
    return text


def with_prefix(text: str, prefix: str) -> str:
    """The proposal as stored: ``prefix`` + " " + the rest, whether or not the user kept it."""
    rest = strip_prefix(text, prefix)
    return f"{prefix} {rest}" if prefix else rest


def contains_html(text: str) -> bool:
    return bool(HTML_TAG.search(text))


def _fold(word: str) -> str:
    decomposed = unicodedata.normalize("NFKD", word.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def significant_words(text: str) -> list[str]:
    """Lower-case, accent-free words of four letters or more that are not stopwords."""
    words = (_fold(w) for w in WORD.findall(text))
    return [w for w in words if len(w) >= 4 and w not in STOPWORDS]


def stem(word: str) -> str:
    """Crude, language-neutral stem: no plural mark, six letters at most.

    "musees"/"musee", "culturelles"/"culturel", "gratuits"/"gratuit" meet.
    """
    if len(word) > 4 and word[-1] in "sx":
        word = word[:-1]
    return word[:6]


@lru_cache(maxsize=50_000)
def dominant_keywords(text: str, limit: int = 3) -> frozenset[str]:
    """Up to ``limit`` stems that best say what ``text`` is about.

    The most repeated significant words, then the longest (long words are rarer, so more
    telling). Enough for the sequence's de-duplication, which only needs to notice that two
    proposals talk about the same thing.
    """
    counts: Counter = Counter()
    longest: dict[str, int] = {}
    for word in significant_words(text):
        key = stem(word)
        counts[key] += 1
        longest[key] = max(longest.get(key, 0), len(word))
    ranked = sorted(counts, key=lambda s: (-counts[s], -longest[s], s))
    return frozenset(ranked[:limit])
