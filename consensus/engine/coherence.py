"""How well do an idea's keywords describe it? Coherence, coverage, exclusivity, diversity.

Staff and visitors read an idea through its keywords before its proposals. Four measures from
the topic-model literature, computed on the consultation's own answers (one answer, one
document: answers are a sentence or two):

* coherence: do the texts that use one keyword use the others? NPMI of the keyword pairs
  (normalised pointwise mutual information; Lau, Newman and Baldwin 2014), from -1 (never in
  one answer) to 1 (always together). On short answers most pairs never meet, even in a clear
  idea ("bus" or "train"), so it runs low;
* coverage: the share of the idea's answers that use at least one of its keywords;
* exclusivity: of the answers that use a keyword, the share in the idea (FREX's second half,
  Roberts et al. 2014), averaged over its keywords: a word used everywhere sets nothing apart;
* diversity: distinct words among all the ideas' keywords (Dieng et al. 2020).

`bench/label_quality.py` compares Concorde's keywords with BERTopic's on the same answers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from consensus.engine.ideas import _tokenizer


@dataclass(frozen=True)
class KeywordScores:
    """One value per idea; nan where it cannot be computed (no keyword any answer uses)."""

    coherence: np.ndarray
    coverage: np.ndarray
    exclusivity: np.ndarray


def keyword_scores(
    texts: list[str],
    labels: np.ndarray,
    keywords: list[list[str]],
    *,
    weights: np.ndarray | None = None,
    language: str = "fr",
) -> KeywordScores:
    """Scores of the keywords of ideas 0..len(keywords)-1 over `texts`, labelled by `labels`
    (-1: noise, in no idea but counted among the answers). Answers are weighted by `weights`
    (duplicate counts). Keywords are found with the keywords' own tokenizer
    (`ideas._tokenizer`: stop words out, words of 3 letters or more), a two-word keyword as its
    two words side by side. A pair with a word no answer uses is left out of the coherence."""
    from scipy.sparse import csr_matrix
    from sklearn.feature_extraction.text import CountVectorizer

    k = len(keywords)
    labels = np.asarray(labels, dtype=np.int64)
    if labels.shape[0] != len(texts):
        raise ValueError(f"{len(texts)} texts but {labels.shape[0]} labels")
    if labels.size and labels.max() >= k:
        raise ValueError(f"labels name idea {labels.max()} but keywords are given for {k} ideas")
    nan = np.full(k, np.nan)
    vocab = list(dict.fromkeys(word for words in keywords for word in words))
    w = np.ones(len(texts)) if weights is None else np.asarray(weights, dtype=np.float64)
    total = float(w.sum())
    if not vocab or total <= 0:
        return KeywordScores(nan, nan.copy(), nan.copy())
    index = {word: i for i, word in enumerate(vocab)}
    vec = CountVectorizer(
        tokenizer=_tokenizer(language),
        token_pattern=None,
        lowercase=False,
        ngram_range=(1, 2),
        vocabulary=index,
        binary=True,
        dtype=np.float64,
    )
    present = vec.transform(texts).tocsr()  # answers x keywords: 1 where the answer uses it
    weighted = present.multiply(w[:, None]).tocsr()
    together = (present.T @ weighted).toarray() / total
    alone = np.diag(together).copy()
    ok = labels >= 0
    onehot = csr_matrix((w[ok], (labels[ok], np.flatnonzero(ok))), shape=(k, len(texts)))
    in_idea = (onehot @ present).toarray()  # idea x keyword: weight of its answers using it
    idea_w = np.asarray(onehot.sum(axis=1)).ravel()
    coherence, coverage, exclusivity = nan.copy(), nan.copy(), nan.copy()
    for c, words in enumerate(keywords):
        cols = [index[word] for word in dict.fromkeys(words)]
        used = [col for col in cols if alone[col] > 0]
        if not used:
            continue
        pairs = [
            _npmi(together[a, b], alone[a], alone[b])
            for i, a in enumerate(used)
            for b in used[i + 1 :]
        ]
        if pairs:
            coherence[c] = float(np.mean(pairs))
        exclusivity[c] = float(np.mean(in_idea[c, used] / (alone[used] * total)))
        if idea_w[c] > 0:
            rows = onehot[c].indices
            hit = np.asarray(present[rows][:, used].sum(axis=1)).ravel() > 0
            coverage[c] = float(w[rows][hit].sum() / idea_w[c])
    return KeywordScores(coherence, coverage, exclusivity)


def _npmi(p_ab: float, p_a: float, p_b: float) -> float:
    if p_ab <= 0:
        return -1.0
    if p_ab >= 1:
        return 1.0
    return float(np.log(p_ab / (p_a * p_b)) / -np.log(p_ab))


def keyword_diversity(keywords: list[list[str]]) -> float:
    """Distinct words over all the ideas' keywords (a two-word keyword counts its words)."""
    words = [word for terms in keywords for term in terms for word in term.split()]
    return len(set(words)) / len(words) if words else float("nan")


def keyword_repeats(keywords: list[list[str]], language: str = "fr") -> np.ndarray:
    """Per idea, the share of its keywords that repeat a word of an earlier one: another form
    of it ("impôt" after "impôts", folded as `top_keywords` folds them) or a two-word keyword
    holding it ("baisser impôts" after "impôts"). A list that repeats itself names fewer
    things and lifts its coherence and coverage (a word always meets itself)."""
    kept = without_repeats(keywords, language)
    return np.array(
        [
            1 - len(new) / len(words) if words else np.nan
            for words, new in zip(keywords, kept, strict=True)
        ]
    )


def without_repeats(keywords: list[list[str]], language: str = "fr") -> list[list[str]]:
    """Each idea's keywords without those that repeat a word of an earlier one."""
    from consensus.engine.ideas import _word_folder

    unigrams = {word for words in keywords for term in words for word in term.split()}
    fold = _word_folder(sorted(unigrams), language)
    out = []
    for words in keywords:
        seen: set[str] = set()
        kept = []
        for term in words:
            keys = {fold(word) for word in term.split()}
            if not keys & seen:
                kept.append(term)
            seen |= keys
        out.append(kept)
    return out
