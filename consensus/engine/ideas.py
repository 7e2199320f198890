"""Group proposals into ideas: dedupe, cluster, label, assign. Arrays in, dataclasses out.

No Django here: the Celery tasks load texts and vectors, call these functions
and write the results back. Vectors are rows of L2-normalised embeddings
(float32 or float16; float16 is converted block by block).

Pipeline (`find_ideas` runs all of it):

1. `dedupe`: exact duplicates by normalised text (lowercase, no accents, no
   punctuation, no leading "Il faut"), then near-duplicates with cosine >=
   `near_threshold`, compared by blocked matrix products (within k-means buckets
   above `exact_block_max` unique texts, so it stays sub-quadratic at 2 M).
2. `cluster_vectors` on the unique texts, weighted by duplicate counts. Given their
   texts, each row first gets the LSA of its TF-IDF words appended at weight 0.6
   (`with_lexical`, `ClusterParams.lexical_weight`). Default
   (`method="graph"`): PCA to 128 dims; up to `graph_max_nodes` (10,000) unique
   texts each is a node; above that a stable weighted sample of 10,000 texts (drawn by
   a hash of their vectors, so the same from night to night) is clustered that way, and every
   other text takes the idea of its nearest sampled texts (`large_graph="sample"`; the
   earlier "micro" path makes micro-clusters the nodes instead); a
   k-nearest-neighbour graph (k = 15, cosine cubed) in which a node weighs as the
   proposals it stands for; Leiden communities (python-igraph) at a resolution growing
   like sqrt(n) (see `ClusterParams.resolution`). Ideas smaller than `min_points`
   (counting duplicates) become noise, and noise joins the nearest idea when it is
   as close to it as the idea's own members are (`noise_reassign_threshold="auto"`);
   only truly isolated texts stay noise. Linear in n (docs/bench_engine_scale.md).
   `method="hdbscan"` / `"agglomerative"` keep the earlier path
   (micro-clusters, then HDBSCAN or average linkage on their centroids).
   Label -1 is noise. Same seed, same input -> same labels.
3. `label_ideas`: class-based TF-IDF keywords (French and English stop words, and those of
   the consultation's language; Chinese cut into words), the 3 members nearest to the
   centroid, size and share.
4. `assign_to_ideas` (new proposals -> nearest idea or none) and
   `nearest_neighbors` ("similar proposals" while typing).
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import re
import threading
import unicodedata
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

__all__ = [
    "STOP_WORDS",
    "Assignment",
    "ClusterParams",
    "DedupResult",
    "Idea",
    "IdeasResult",
    "Neighbors",
    "assign_to_ideas",
    "cluster_vectors",
    "dedupe",
    "find_ideas",
    "find_themes",
    "idea_centroids",
    "label_ideas",
    "nearest_neighbors",
    "normalize_text",
    "theme_centres",
    "theme_count",
    "theme_names",
    "top_keywords",
]

# Rows per block in matrix products: block x n float32 stays around 64 MB.
_BLOCK_CELLS = 16_000_000

# ---------------------------------------------------------------------------
# Text normalisation and stop words
# ---------------------------------------------------------------------------

_PREFIX_RE = re.compile(r"^(il (?:faut|faudrait)|on doit|il est necessaire de)\b ?")
# Letters and digits: a normalised text is its words joined by single spaces.
_WORD_RE = re.compile(r"[^\W_]+")
# The combining diacritical marks block: every accent of French and most Latin scripts.
_LATIN_MARKS_RE = re.compile("[\u0300-\u036f]+")


def _ascii_table(keep: Callable[[str], bool]) -> bytes:
    """A `bytes.translate` table that turns every byte `keep` refuses into a space."""
    return bytes(c if c < 128 and keep(chr(c)) else 32 for c in range(256))


# Words of an ASCII text cut by `bytes.translate` and `split` (`_ascii_runs`): the same words
# as the regexes they stand for, about 0.7x their time (600,000 answers: 3.7 s against 5.3 s
# for scikit-learn's pattern); most answers are ASCII once their accents are folded (95 % of
# Grand Débat's), and the words of every text are read in a run's final step
# (docs/bench_engine_scale.md).
_ASCII_ALNUM = _ascii_table(str.isalnum)  # [^\W_]: letters and digits
_ASCII_WORD = _ascii_table(lambda c: c.isalnum() or c == "_")  # \w
_ASCII_LETTERS = _ascii_table(str.isalpha)  # [^\W\d_]


def _ascii_runs(text: str, table: bytes) -> list[str]:
    """The runs of an ASCII `text`'s characters that `table` keeps (`_ascii_table`)."""
    return text.encode("ascii").translate(table).decode("ascii").split()


_COMBINING: dict[int, None] | None = None


def _combining_table() -> dict[int, None]:
    """str.translate table deleting every combining character (built once, ~0.3 s)."""
    global _COMBINING
    if _COMBINING is None:
        import sys

        _COMBINING = {c: None for c in range(sys.maxunicode + 1) if unicodedata.combining(chr(c))}
    return _COMBINING


def strip_accents(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    if decomposed.isascii():
        return decomposed
    # The Latin marks by a one-range regex first: deleting through the full table costs
    # a dictionary lookup per character (2.5x slower on 1.5M French answers).
    decomposed = _LATIN_MARKS_RE.sub("", decomposed)
    if decomposed.isascii():
        return decomposed
    return decomposed.translate(_combining_table())


def normalize_text(text: str) -> str:
    """Key for exact-duplicate detection.

    Lowercase, accents and punctuation removed, spaces collapsed, and a leading
    "Il faut" (Make.org's mandatory prefix) dropped: "Il faut : Plus de vélos !"
    and "plus de velos" give the same key.
    """
    folded = strip_accents(str(text).lower())
    words = _ascii_runs(folded, _ASCII_ALNUM) if folded.isascii() else _WORD_RE.findall(folded)
    return _PREFIX_RE.sub("", " ".join(words))


_FRENCH_STOP = """
a à afin ai aie aient aies ait alors as au aucun aucune aupres auquel aura aurai auraient aurais
aurait auras aurez auriez aurions aurons auront aussi autre autres aux auxquelles auxquels avaient
avais avait avant avec avez aviez avions avoir avons ayant ayez ayons bah beaucoup bien bon c ça ca
car ce ceci cela celle celles celui cependant certain certaine certaines certains ces cet cette ceux
chacun chacune chaque chez ci comme comment d dans de des desquelles desquels deux devrait devraient
doit doivent donc dont du duquel durant elle elles en encore entre es est et etaient etais etait
etant etc ete etes etiez etions etre eu eue eues eûmes eurent eus eusse eussent eusses eussiez
eussions eut eût eûtes eux faire fais fait faites falloir faudra faudrait faut font fûmes furent fus
fusse fussent fusses fussiez fussions fut fût fûtes hors ici il ils j je jusqu jusque l la laquelle
le lequel les lesquelles lesquels leur leurs lors lorsque lui m ma mais me meme memes même mêmes
mes moi moins mon n ne ni nos notre nous on ont ou où par parce pas peu peut peuvent plupart plus
plusieurs pour pourquoi pourrait pourraient pouvoir puis qu quand que quel quelle quelles quelque
quelques quels qui quoi s sa sans se sera serai seraient serais serait seras serez seriez serions
serons seront ses si sien sienne soi soient sois soit sommes son sont sous soyez soyons suis sur t
ta tant te tel telle telles tels tes toi ton tous tout toute toutes tres très trop tu un une unes
uns vers voila voilà vont vos votre vous y été étaient étais était étant étiez étions être êtes
etre aller avoir chose choses cas fois faudrait falloir mettre non oui rien tout toujours jamais
contre notamment ainsi déjà après mieux selon depuis pendant enfin sinon certes pourtant surtout
autant assez vraiment cependant lors lorsque chez etc dès
""".split()

_ENGLISH_EXTRA = "should must would could need needs also get make".split()


def _build_stop_words() -> frozenset[str]:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    words = set(_FRENCH_STOP) | set(ENGLISH_STOP_WORDS) | set(_ENGLISH_EXTRA)
    words |= {strip_accents(w) for w in words}
    return frozenset(words)


STOP_WORDS: frozenset[str] = _build_stop_words()

# Simplified Chinese characters of common function words and their traditional forms: the
# stop-word lists are simplified, Taiwanese and Hong Kong answers are traditional.
_TRADITIONAL = str.maketrans(
    "们为这个么说会没对过还从与觉样让应该时里关无将进来后发经现实点问间见开东尔则虽却于边较处"
    "别并几据给儿两连吗认谁种么视级该总亲当务习乐买卖难头题须",
    "們為這個麼說會沒對過還從與覺樣讓應該時裡關無將進來後發經現實點問間見開東爾則雖卻於邊較處"
    "別並幾據給兒兩連嗎認誰種麼視級該總親當務習樂買賣難頭題須",
)
# Chinese opinion verbs, as "should" or "need" in English: in every idea, about none
_CHINESE_EXTRA = "觉得 认为 应该 必须 希望".split()
# Chinese characters (CJK unified ideographs, extension A, compatibility ideographs)
_HAN_RE = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LETTERS_RE = re.compile(r"[^\W\d_]+", re.UNICODE)
_WORD_RUN_RE = re.compile(r"\w+", re.UNICODE)
_TOKEN_RE = re.compile(r"(?u)\b\w\w+\b")  # scikit-learn's default token_pattern


@functools.cache
def stop_words(language: str = "fr") -> frozenset[str]:
    """Stop words of a consultation: French and English ones always (`STOP_WORDS`: answers
    mix them), plus those of its language from the `stopwordsiso` package for any other
    language it knows ("de", "zh", ...; Chinese also in traditional characters)."""
    if language in ("fr", "en"):
        return STOP_WORDS
    import stopwordsiso

    extra = (
        {w.lower() for w in stopwordsiso.stopwords(language)}
        if stopwordsiso.has_lang(language)
        else set()
    )
    if language == "zh":
        extra |= set(_CHINESE_EXTRA)
    extra |= {w.translate(_TRADITIONAL) for w in extra if _HAN_RE.search(w)}
    extra |= {strip_accents(w) for w in extra}
    return STOP_WORDS | frozenset(extra)


_SIMPLIFIED = {traditional: simplified for simplified, traditional in _TRADITIONAL.items()}


def _han_words(run: str) -> list[str]:
    """A run of letters with Chinese characters cut into words (jieba's dictionary, which is
    simplified Chinese: the run is cut as its common characters would be written in simplified
    form, one character for one, and the words keep the run's own characters)."""
    import logging

    import jieba

    jieba.setLogLevel(logging.WARNING)
    words, start = [], 0
    for piece in jieba.cut(run.translate(_SIMPLIFIED)):
        words.append(run[start : start + len(piece)])
        start += len(piece)
    return words


@functools.cache
def _tokenizer(language: str = "fr", min_len: int = 3) -> Callable[[str], list[str]]:
    """The keywords' tokenizer for a language: lower-cased words of `min_len` letters or more
    (no digits; French elisions split on the apostrophe), stop words (`stop_words`) removed.
    Chinese, written without spaces, is cut into words first (jieba), and its words count
    from two characters: a single character is mostly a particle ("的", "是")."""
    stop = stop_words(language)
    plain = re.compile(rf"[^\W\d_]{{{min_len},}}", re.UNICODE)

    def tokenize(text: str) -> list[str]:
        text = text.lower()
        if text.isascii():  # the same words as `plain`, faster
            return [
                w for w in _ascii_runs(text, _ASCII_LETTERS) if len(w) >= min_len and w not in stop
            ]
        if not _HAN_RE.search(text):  # the common case, at the cost of one regex
            return [w for w in plain.findall(text) if w not in stop]
        out = []
        for run in _LETTERS_RE.findall(text):
            if not _HAN_RE.search(run):
                if len(run) >= min_len and run not in stop:
                    out.append(run)
                continue
            for word in _han_words(run):
                long_enough = len(word) >= (2 if _HAN_RE.search(word) else min_len)
                if long_enough and word not in stop:
                    out.append(word)
        return out

    return tokenize


# ---------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------


def _as_matrix(vectors: np.ndarray, name: str = "vectors") -> np.ndarray:
    x = np.asarray(vectors)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (n, dim), got shape {x.shape}")
    if x.shape[0] and not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"{name} must be floating point, got {x.dtype}")
    return x


def _rows_f32(x: np.ndarray, lo: int, hi: int) -> np.ndarray:
    return np.asarray(x[lo:hi], dtype=np.float32)


def _normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    n[n == 0] = 1.0
    return x / n


def _normalize_own(a: np.ndarray, step: int = 100_000) -> np.ndarray:
    """`_normalize` of a float32 matrix that nothing else holds, in place and block by block
    on `cluster_workers()` threads: the same floats, without a second copy of the matrix
    (the words' LSA of 1.2M texts: 0.47 GB)."""

    def unit(lo: int) -> None:
        a[lo : lo + step] = _normalize(a[lo : lo + step])

    _map_blocks(unit, range(0, a.shape[0], step))
    return a


def _block_rows(n_cols: int) -> int:
    return max(1, _BLOCK_CELLS // max(1, n_cols))


# ---------------------------------------------------------------------------
# (a) Dedupe
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DedupResult:
    """Duplicate groups. Indices refer to the input rows.

    `representatives[g]` is the row standing for group g (the earliest row of
    the largest exact-duplicate set in it), `counts[g]` its number of rows, and
    `group_of[i]` the group of row i.
    """

    representatives: np.ndarray  # (n_groups,) int64
    counts: np.ndarray  # (n_groups,) int64
    group_of: np.ndarray  # (n,) int64
    n_exact_duplicates: int  # rows folded by identical normalised text
    n_near_duplicates: int  # further rows folded by cosine >= threshold

    @property
    def n_groups(self) -> int:
        return int(self.representatives.shape[0])


def _exact_groups(texts: list[str]) -> np.ndarray:
    """First row index for each row's normalised text (array of length n)."""
    first: dict[bytes, int] = {}
    raw: dict[str, int] = {}  # identical raw strings are common: normalise each once
    out = np.empty(len(texts), dtype=np.int64)
    for i, t in enumerate(texts):
        seen = raw.get(t)
        if seen is not None:
            out[i] = seen
            continue
        key = hashlib.blake2b(normalize_text(t).encode("utf-8"), digest_size=16).digest()
        out[i] = raw[t] = first.setdefault(key, i)
    return out


def _near_pairs_exact(
    x: np.ndarray, idx: np.ndarray, threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """All pairs (a, b), a < b, among rows `idx` of x with cosine >= threshold.

    Row blocks of at most 256 against the columns from their own first row on: the
    upper triangle and the diagonal blocks only, a little over half the products and
    comparisons of the full square (dedupe's buckets hold about 2,000 rows).
    """
    sub = _normalize(x[idx])
    m = sub.shape[0]
    rows, cols = [], []
    step = min(256, _block_rows(m))
    for lo in range(0, m, step):
        hi = min(m, lo + step)
        sims = sub[lo:hi] @ sub[lo:].T
        flat = np.flatnonzero(sims >= threshold)
        r, c = np.divmod(flat, m - lo)
        keep = c > r
        rows.append(idx[r[keep] + lo])
        cols.append(idx[c[keep] + lo])
    if not rows:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(rows), np.concatenate(cols)


def dedupe(
    texts: list[str],
    vectors: np.ndarray | None = None,
    *,
    near_threshold: float | None = 0.95,
    exact_block_max: int = 30_000,
    bucket_size: int = 2_000,
    seed: int = 0,
) -> DedupResult:
    """Collapse exact and near duplicates.

    texts: the raw proposals. vectors: their L2-normalised embeddings (rows
    aligned with texts), or None to do exact dedupe only; same for
    `near_threshold=None`. Up to `exact_block_max` unique texts every pair is
    compared; above that, texts are first bucketed with MiniBatchKMeans
    (~`bucket_size` per bucket) and compared within buckets, which can miss a
    pair that straddles two buckets (rare at cosine >= 0.95).
    """
    texts = list(texts)
    n = len(texts)
    if vectors is not None:
        vectors = _as_matrix(vectors)
        if vectors.shape[0] != n:
            raise ValueError(f"{n} texts but {vectors.shape[0]} vectors")
    if n == 0:
        empty = np.zeros(0, dtype=np.int64)
        return DedupResult(empty, empty, empty, 0, 0)

    first = _exact_groups(texts)
    uniq = np.flatnonzero(first == np.arange(n))
    n_exact = n - uniq.shape[0]

    # parent[i] = row that stands for i; start with exact groups.
    parent = first.copy()
    n_near = 0
    if vectors is not None and near_threshold is not None and uniq.shape[0] > 1:
        from scipy.sparse import csr_matrix

        if uniq.shape[0] <= exact_block_max:
            a, b = _near_pairs_exact(vectors, uniq, near_threshold)
        else:
            buckets = _kmeans_buckets(vectors, uniq, max(2, uniq.shape[0] // bucket_size), seed)
            order = np.argsort(buckets, kind="stable")
            bounds = np.flatnonzero(np.diff(buckets[order])) + 1
            parts = _map_blocks(
                lambda part: _near_pairs_exact(vectors, uniq[np.sort(part)], near_threshold),
                np.split(order, bounds),
            )
            a = np.concatenate([p[0] for p in parts])
            b = np.concatenate([p[1] for p in parts])
        if a.shape[0]:
            pos = np.full(n, -1, dtype=np.int64)
            pos[uniq] = np.arange(uniq.shape[0])
            m = uniq.shape[0]
            pa, pb = pos[a], pos[b]
            graph = csr_matrix(
                (np.ones(2 * pa.shape[0], np.int8), (np.r_[pa, pb], np.r_[pb, pa])), shape=(m, m)
            )
            # Greedy leaders, not connected components: a member must itself be
            # within the threshold of its leader, so chains A~B~C do not merge A and C.
            # Leaders first by number of exact copies, then earliest row.
            exact_counts = np.bincount(first, minlength=n)[uniq]
            order = np.lexsort((uniq, -exact_counts))
            leader = np.full(m, -1, dtype=np.int64)
            indptr, indices = graph.indptr, graph.indices
            for j in order:
                if leader[j] >= 0:
                    continue
                leader[j] = j
                nbrs = indices[indptr[j] : indptr[j + 1]]
                free = nbrs[leader[nbrs] < 0]
                leader[free] = j
            uniq_leader = uniq[leader]
            n_near = int(np.count_nonzero(uniq_leader != uniq))
            remap = np.arange(n)
            remap[uniq] = uniq_leader
            parent = remap[first]

    reps, group_of, counts = np.unique(parent, return_inverse=True, return_counts=True)
    return DedupResult(
        representatives=reps.astype(np.int64),
        counts=counts.astype(np.int64),
        group_of=group_of.astype(np.int64),
        n_exact_duplicates=int(n_exact),
        n_near_duplicates=int(n_near),
    )


def _kmeans_buckets(x: np.ndarray, idx: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Bucket of each row idx of x: spherical k-means with k centres on a 64-dim projection.

    Buckets only need to keep near-identical rows together, so they are computed on the
    rows projected on their 64 principal axes (8x less arithmetic than 512 dims), fitted
    on 64 rows per centre, then one assignment pass (1.3 M rows, k = 636: a few seconds).
    """
    rng = np.random.default_rng(seed)
    sample = idx if idx.shape[0] <= 30_000 else np.sort(rng.choice(idx, 30_000, replace=False))
    s = np.asarray(x[sample], dtype=np.float32)
    mean = s.mean(axis=0, dtype=np.float64).astype(np.float32)
    s -= mean
    comps = np.linalg.eigh((s.T @ s).astype(np.float64))[1][:, ::-1][:, :64].astype(np.float32)
    z = np.empty((idx.shape[0], comps.shape[1]), dtype=np.float32)
    step = 100_000

    def project(lo: int) -> None:
        z[lo : lo + step] = (_rows_f32(x[idx[lo : lo + step]], 0, step) - mean) @ comps

    _map_blocks(project, range(0, idx.shape[0], step))
    z = _normalize_own(z)
    size = min(idx.shape[0], 64 * k)
    fit = np.arange(idx.shape[0])
    if size < idx.shape[0]:
        fit = np.sort(np.random.default_rng(seed).choice(idx.shape[0], size, replace=False))
    cents = _spherical_kmeans(z[fit], np.ones(size), k, np.random.default_rng([seed, 7]), iters=5)
    return _assign_nearest(z, cents)


def _sample_rows(x: np.ndarray, idx: np.ndarray, size: int, seed: int) -> np.ndarray:
    if size >= idx.shape[0]:
        return _normalize(x[idx])
    rng = np.random.default_rng(seed)
    return _normalize(x[np.sort(rng.choice(idx, size, replace=False))])


# ---------------------------------------------------------------------------
# (b) Clustering
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ClusterParams:
    """Knobs of `cluster_vectors`. Defaults suit French proposals embedded with USE-m3.

    None means "pick from the data size" (see `cluster_vectors`). The defaults were
    chosen on half of the Grand Débat questions and checked on the other half and on
    République numérique (docs/bench_engine_quality.md).
    """

    seed: int = 0
    # "graph" (default): k-nearest-neighbour graph + Leiden communities.
    # "hdbscan" / "agglomerative": the earlier density / linkage paths, kept for comparison.
    method: Literal["graph", "hdbscan", "agglomerative"] = "graph"
    # hdbscan/agglomerative only: up to this many unique texts, cluster the points
    # directly; above, micro-clusters first.
    small_max: int = 300
    pca_dims: int = 50  # hdbscan/agglomerative small path; the others use large_pca_dims
    large_pca_dims: int = 128
    # HDBSCAN on points (small path). None: max(3, min(50, round(sqrt(n) / 2))).
    min_cluster_size: int | None = None
    min_samples: int | None = None  # None: max(2, min_cluster_size // 3)
    cluster_selection_epsilon: float = 0.0
    # Agglomerative (average linkage, cosine) cut distance, 1 - cosine.
    agglomerative_distance: float = 0.55
    # Micro-clusters (MiniBatchKMeans). graph: used above `graph_max_nodes` unique texts,
    # k = micro_k or min(graph_max_nodes / 2, n / 4). hdbscan/agglomerative: above small_max,
    # k = micro_k, or 20 x expected_ideas, or n/20 capped to [50, 5000].
    expected_ideas: int | None = None
    micro_k: int | None = None
    micro_min_cluster_size: int = 3  # HDBSCAN over centroids
    micro_min_samples: int = 2
    # graph: neighbours per node (UMAP/BERTopic's default 15), Leiden resolution and
    # the most nodes the graph gets before micro-clusters stand for the texts.
    # resolution 1 is plain modularity; higher gives more, smaller ideas. "auto":
    # max(1, sqrt(min(n, graph_max_nodes) / resolution_n0)) with n the proposals
    # (duplicates counted), so 1 to 3.16 by default. Plain modularity cannot resolve
    # communities below ~sqrt(edges) (its resolution limit), so the more proposals, the
    # coarser its ideas; the sqrt(n) growth offsets part of that while keeping plain
    # modularity at one question's worth (~1,000 answers).
    graph_neighbors: int = 15
    # graph: an edge weighs cosine ** edge_power. Above 1 the nearest neighbours count far
    # more than the 15th, so a community follows the dense core of an idea instead of the
    # weak links between ideas; 3 was chosen on the tuning half (1, 2, 3, 4, 6, 8 tried;
    # docs/bench_engine_quality.md). Identical texts (cosine 1) weigh 1 whatever the power.
    edge_power: float = 3.0
    resolution: float | Literal["auto"] = "auto"
    resolution_n0: float = 1000.0
    graph_max_nodes: int = 10_000
    # graph, above graph_max_nodes unique texts: "sample" (default): a weighted sample of
    # graph_max_nodes texts drawn by a hash of their vectors goes through the direct path and
    # every other text takes the idea of its nearest sampled texts (`_cluster_sampled`).
    # "micro": micro-clusters stand for the texts (`_micro_clusters_two_level`). On 60,000
    # real answers the sample keeps its ideas far better from one run to the next (ARI
    # 0.87-0.91 against 0.53-0.59) and scores higher on every score of both halves; at 2M,
    # 170 of 265 ideas kept night to night against 107 of 294, for 45 s more on a final step
    # of 8 minutes (docs/bench_engine_quality.md).
    large_graph: Literal["sample", "micro"] = "sample"
    # An idea needs at least this many rows (duplicates counted). None: max(3, n / 10000).
    min_points: int | None = None
    # Noise rows (ideas too small, or HDBSCAN noise) join the nearest idea when their
    # cosine to its centroid is >= this. "auto": the 5th percentile of the cosines of
    # clustered rows to their own idea's centroid, i.e. a row joins an idea when it is
    # at least as close as the loosest 5 % of its members; rows farther from every
    # idea stay noise. None keeps all noise.
    noise_reassign_threshold: float | Literal["auto"] | None = "auto"
    # graph, opt-in: after Leiden, two ideas merge while the mean cosine between their
    # proposals is at least this share of the geometric mean of their own mean
    # within-idea cosines (`_merge_similar_ideas`), for coarser ideas on questions where
    # Leiden cuts one homogeneous mass of answers into pieces. Off (None) by default:
    # with USE-m3 vectors, resolution_n0 = 250 and 0.75 won the tuning half but lowered
    # ARI on the held-out sets (docs/bench_engine_quality.md). Vectors whose unrelated
    # sentences are already close (MiniLM ~0.3 cosine, the hashing test embedder ~0.37,
    # USE-m3 ~0.1) merge much more at the same ratio.
    merge_ratio: float | None = None
    # graph: consensus of this many Leiden partitions (seeds seed .. seed + runs - 1): each
    # edge is weighed by the share of them that put its two ends in one idea, then Leiden
    # runs once more on that graph (`_consensus_leiden`). One partition depends on the order
    # in which Leiden visits the nodes; answers that several orders group together are the
    # ones that belong together. On the tuning half 10 scores as one run (45 vs 46 of 54) but
    # the ideas depend less on the seed: ARI between seeds 0, 1, 2 rose 0.93 -> 0.96
    # (docs/bench_engine_quality.md). 1 turns it off. Costs ensemble_runs more Leiden passes
    # (about 1 s in all on 4,000 texts, 2 s at 2M rows).
    ensemble_runs: int = 10
    # graph and the other paths, when the caller passes the texts: each row is the embedding
    # with the LSA of its TF-IDF words appended at this weight, re-normalised
    # (`with_lexical`). The embedding says what a text means; shared words say which
    # answers a reader would file together, and they separate the sub-topics of one
    # question that a sentence encoder puts close together. On the tuning half 0.6 scored
    # higher than BERTopic on 62 of 62 scores (0 on 58, 0.5 on 61, 0.7 on 59), mean ARI/NMI
    # 0.428/0.571 -> 0.461/0.607; held out, 61 of 62 (58 before), République numérique NMI
    # 0.201 -> 0.229 (docs/bench_engine_quality.md). 0 turns it off.
    lexical_weight: float = 0.6
    lexical_dims: int = 100
    # the words leave out each proposal's frame and the verb after it ("Il faut supprimer ...",
    # `_without_frame`): shared, those made ideas of everything "to abolish" or "to ban" on
    # Make.org's proposals, where every text starts "Il faut" (docs/bench_engine_quality.md,
    # session 23). "auto": when at least FRAME_SHARE_AUTO of the texts start with a frame, as
    # where a consultation asks for one; open answers (1-4 % per Grand Débat question) keep
    # their words, since on the tuning half leaving the frames out scored a little lower.
    lexical_skip_frame: bool | Literal["auto"] = "auto"
    # the prefix the consultation asks its proposals to start with (Make.org's per-question
    # proposalPrefix; `Consultation.proposal_prefix`) is a frame too where the built-in French
    # and English ones do not cover it ("Je propose de", "Bisogna"), with the word after it
    # when that word is the verb (frame_verb_follows: French and English; not German, whose
    # verb comes last, nor Chinese, written without spaces). `frame_pattern`.
    frame_prefix: str = ""
    frame_verb_follows: bool = False
    # graph, opt-in: ideas chosen across resolutions (`_persistent_ideas`). Leiden also runs at
    # 1/4 to 2 times the resolution; the coarser communities form a tree over the ideas, and a
    # community replaces the ideas under it when its volume times the resolutions it lives
    # through is more than persistence_ratio times theirs (HDBSCAN's excess of mass, with the
    # resolution in place of the density). It only gathers the default's ideas. 1.5 won the
    # tuning half (62 of 62, 52 same rows) but, held out, bought ARI against the question
    # (bench 8 0.246 -> 0.252) with ARI against the reference clusters (-0.04 on the fresh
    # samples) and lost a same-row score, for 4x the clustering time
    # (docs/bench_engine_quality.md). None: off.
    persistence_ratio: float | None = None
    n_jobs: int = 1


LEXICAL_FIT_MAX = 50_000  # texts the TF-IDF vocabulary and the LSA axes are fitted on


# A proposal's frame and the action right after it ("Il faut supprimer ...", "We should ban ...")
# say what to do, not what about: shared, they made ideas of everything "to abolish" on
# Make.org's proposals (docs/bench_engine_quality.md, session 23). The words leave them out.
_FRAME_RE = re.compile(
    r"^\W*(?:il\s+(?:ne\s+)?fau(?:t|drait)(?:\s+(?:pas|plus|surtout|absolument|vraiment|"
    r"aussi|également|egalement|davantage|enfin|donc|rapidement|urgemment|d'abord))*"
    r"(?:\s+\w+(?:er|ir|re|oir)\b)?"
    r"|(?:we|you|they|governments?|people)\s+(?:should|must|need\s+to|have\s+to|ought\s+to)"
    r"(?:\s+(?:not|also|really|urgently|finally))*(?:\s+\w+)?)",
    re.IGNORECASE,
)


FRAME_SHARE_AUTO = 0.5


@functools.lru_cache(maxsize=64)
def frame_pattern(prefix: str = "", verb_follows: bool = False) -> re.Pattern:
    """The frames the words leave out: the built-in ones (`_FRAME_RE`) and a consultation's own
    ``prefix`` where they do not cover it whole, with the word after it when ``verb_follows``
    (right after the prefix when it ends with an apostrophe: "Je propose d'agir")."""
    prefix = " ".join(prefix.split())
    covered = _FRAME_RE.match(prefix)
    if not prefix or (covered and covered.end() == len(prefix)):
        return _FRAME_RE
    elided = prefix[-1] in "'’"
    own = r"\s+".join(re.escape(word) for word in prefix.split(" "))
    own = re.sub("['’]", "['’]", own)  # either apostrophe, whichever the prefix has
    if verb_follows:
        own += r"(?:\s*\w+)?" if elided else r"(?:\s+\w+)?"
    # a whole word, not the start of one (not in Chinese, written without spaces)
    whole = not (elided and not verb_follows) and not _HAN_RE.search(prefix[-1])
    end = r"(?!\w)" if whole else ""
    return re.compile(rf"^\W*(?:{own}){end}|{_FRAME_RE.pattern}", re.IGNORECASE)


def _without_frame(text: str, frame: re.Pattern = _FRAME_RE) -> str:
    """The text without its leading proposal frame and the verb that follows it."""
    return frame.sub("", text, count=1)


def frame_of(params: ClusterParams, texts: list[str]) -> re.Pattern | None:
    """The frames the words leave out (`frame_pattern` of the params' prefix), or None where
    they keep them (`ClusterParams.lexical_skip_frame`: "auto" leaves them out when at least
    FRAME_SHARE_AUTO of up to 10,000 texts spread over the list start with one)."""
    value = params.lexical_skip_frame
    if not isinstance(value, bool) and value != "auto":
        raise ValueError(f"lexical_skip_frame must be true, false or 'auto', not {value!r}")
    frame = frame_pattern(params.frame_prefix, params.frame_verb_follows)
    if value == "auto":
        sample = texts[:: max(1, len(texts) // 10_000)]
        framed = sum(1 for t in sample if frame.match(t))
        value = bool(sample) and framed >= FRAME_SHARE_AUTO * len(sample)
    return frame if value else None


def skips_frame(params: ClusterParams, texts: list[str]) -> bool:
    """Whether the words leave out the proposals' frames (`frame_of`)."""
    return frame_of(params, texts) is not None


def lexical_features(
    texts: list[str], *, dims: int = 100, seed: int = 0, frame: re.Pattern | None = None
) -> np.ndarray | None:
    """LSA of the texts' TF-IDF: (n, <= dims) float32 rows of unit length, or None.

    Words are lower-cased with accents folded (Chinese cut into words, `_lexical_words`) and
    count when at least 2 texts use them (sublinear term frequency). The vocabulary and the
    axes are fitted on at most `LEXICAL_FIT_MAX` texts, those with the smallest CRC-32 (a
    sample that stays almost the same when a night adds answers), then every text is
    projected, so the cost stays linear in n. None when fewer than 3 words are shared
    (nothing to add); a text with no shared word gets a zero row. frame: each text without its
    leading proposal frame and the verb after it (`frame_pattern`, `_without_frame`).
    """
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

    n = len(texts)
    if n < 3:
        return None
    if frame is not None:
        texts = [_without_frame(t, frame) for t in texts]
    fit = np.arange(n)
    if n > LEXICAL_FIT_MAX:
        crc = np.fromiter((zlib.crc32(t.encode("utf-8")) for t in texts), np.uint32, count=n)
        fit = np.sort(np.argsort(crc, kind="stable")[:LEXICAL_FIT_MAX])
    chinese = any(_HAN_RE.search(texts[i]) for i in fit)
    vectorizer = TfidfVectorizer(
        # scikit-learn's lower-casing, accent folding and words (`_lexical_text`,
        # `_lexical_tokens`), faster. Its words are runs of letters between spaces or
        # punctuation: a Chinese clause would be one "word". Cut into words by jieba instead
        # (`_lexical_words`).
        preprocessor=_lexical_text,
        tokenizer=_lexical_words if chinese else _lexical_tokens,
        token_pattern=None,
        min_df=2,
        sublinear_tf=True,
        dtype=np.float32,
    )
    try:
        fitted = vectorizer.fit_transform([texts[i] for i in fit])
    except ValueError:  # no word at all (emoji, numbers only)
        return None
    k = min(dims, fitted.shape[1] - 1, fitted.shape[0] - 1)
    if fitted.shape[1] < 3 or k < 2:
        return None
    svd = TruncatedSVD(n_components=k, random_state=seed).fit(fitted)
    out = np.empty((n, svd.components_.shape[0]), dtype=np.float32)
    step = 100_000
    for lo in range(0, n, step):
        out[lo : lo + step] = svd.transform(vectorizer.transform(texts[lo : lo + step]))
    return _normalize_own(out)


def _lexical_text(text: str) -> str:
    """scikit-learn's `lowercase` and `strip_accents="unicode"`, with `strip_accents`'s faster
    folding (the same text)."""
    return strip_accents(text.lower())


def _lexical_tokens(text: str) -> list[str]:
    """scikit-learn's default words (`token_pattern`: 2 letters, digits or "_" and more)."""
    if text.isascii():
        return [w for w in _ascii_runs(text, _ASCII_WORD) if len(w) >= 2]
    return _TOKEN_RE.findall(text)


def _lexical_words(text: str) -> list[str]:
    """scikit-learn's default words (2 letters or digits and more) with every run that holds
    Chinese characters cut into words by jieba (`_han_words`); a single character counts
    only outside Chinese runs, as in the default (Chinese particles such as "的" are one)."""
    out = []
    for run in _WORD_RUN_RE.findall(text):
        words = _han_words(run) if _HAN_RE.search(run) else [run]
        out.extend(w for w in words if len(w) >= 2)
    return out


def with_lexical(
    x: np.ndarray,
    texts: list[str],
    *,
    weight: float,
    dims: int = 100,
    seed: int = 0,
    frame: re.Pattern | None = None,
) -> np.ndarray:
    """Rows of x (unit embeddings) with `weight` x their `lexical_features` appended,
    re-normalised, in x's float type; x itself when weight is 0 or the texts share too few
    words."""
    if not weight:
        return x
    if len(texts) != x.shape[0]:
        raise ValueError(f"{len(texts)} texts but {x.shape[0]} vectors")
    lex = lexical_features(texts, dims=dims, seed=seed, frame=frame)
    if lex is None:
        return x
    dtype = x.dtype if x.dtype in (np.float16, np.float32) else np.float32
    d = x.shape[1]
    out = np.empty((x.shape[0], d + lex.shape[1]), dtype=dtype)
    step = 100_000

    def join(lo: int) -> None:
        head = np.array(x[lo : lo + step], dtype=np.float32)  # a copy, divided in place
        tail = weight * lex[lo : lo + step]
        norm = np.sqrt(np.einsum("ij,ij->i", head, head) + np.einsum("ij,ij->i", tail, tail))
        norm[norm == 0] = 1.0
        head /= norm[:, None]
        tail /= norm[:, None]
        out[lo : lo + step, :d] = head
        out[lo : lo + step, d:] = tail

    _map_blocks(join, range(0, x.shape[0], step))
    return out


def cluster_threads() -> int:
    """BLAS and OpenMP threads of the clustering (`CONCORDE_CLUSTER_THREADS`, default 1).

    OpenBLAS splits a matrix product differently with another number of threads, and the last
    bits of the floats change; the randomized SVDs of the words and of the PCA amplify them, and
    a near-tie in the kNN graph or in Leiden then moves proposals between ideas (18,690 Make.org
    proposals: 68 ideas with one thread, 69 with two, ARI 0.944 between the two runs). With one
    number for every machine, a run gives the same ideas whichever worker computes it.
    """
    from .threads import env_threads

    return env_threads("CONCORDE_CLUSTER_THREADS")


def cluster_workers() -> int:
    """Threads sharing the clustering's block loops (`CONCORDE_CLUSTER_WORKERS`).

    Default: the cores of the machine, at most 4. Unlike `cluster_threads`, this number never
    changes the ideas: each block is computed whole by one thread, with `cluster_threads()` BLAS
    threads, exactly as a loop computes it (`_map_blocks`)."""
    from .threads import env_threads

    return env_threads("CONCORDE_CLUSTER_WORKERS", default=max(1, min(4, os.cpu_count() or 1)))


def _map_blocks(fn, items) -> list:
    """``[fn(item) for item in items]`` on `cluster_workers()` threads, in order.

    Numpy leaves Python's lock during its matrix products and selections, so two threads on two
    cores share the work (1.35-1.4x faster on 1M rows: docs/bench_engine_scale.md; the Python
    parts of each block still take turns). Each call's result is what the loop would give bit
    for bit: the blocks are the same whatever the number of threads, and every product inside
    them runs on `cluster_threads()` BLAS threads (one by default).
    """
    items = list(items)
    workers = min(cluster_workers(), len(items))
    if workers <= 1:
        return [fn(item) for item in items]
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="concorde-blocks")
    try:
        return list(pool.map(fn, items))
    finally:  # an error or a time limit: the blocks not started yet are dropped, not waited for
        pool.shutdown(wait=True, cancel_futures=True)


def fixed_threads(fn):
    """Run `fn` with `cluster_threads()` BLAS and OpenMP threads, whatever the process uses."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=cluster_threads()):
            return fn(*args, **kwargs)

    return wrapper


def _auto_min_cluster_size(n: int) -> int:
    return int(max(3, min(50, round(math.sqrt(n) / 2))))


def _pca(
    x: np.ndarray,
    dims: int,
    seed: int,
    sample_max: int = 50_000,
    *,
    exact: bool = False,
    fit_rows: np.ndarray | None = None,
) -> np.ndarray:
    """Project rows on `dims` principal axes (fitted on a sample), re-normalised; float32.

    exact=False: scikit-learn's randomized PCA (the small paths, whose figures in
    docs/bench_engine_quality.md were tuned with it). exact=True: eigenvectors of the
    covariance of a 30k-row sample, one (d x d) product and `eigh`, several times
    faster than the randomized solver's QR/LU passes over (sample x dims) matrices;
    used by the micro-cluster path. fit_rows (exact=False): fit on these rows, so that
    they project exactly as they would alone (the sampled path).
    """
    n, d = x.shape
    if d <= dims or n <= dims + 1:
        return _normalize(x)
    rng = np.random.default_rng(seed)
    if exact:
        size = min(n, 30_000)
        fit_idx = np.arange(n) if n <= size else np.sort(rng.choice(n, size, replace=False))
        sample = np.asarray(x[fit_idx], dtype=np.float32)
        mean = sample.mean(axis=0, dtype=np.float64)
        sample -= mean.astype(np.float32)
        _, vecs = np.linalg.eigh((sample.T @ sample).astype(np.float64))
        comps = np.ascontiguousarray(vecs[:, ::-1][:, :dims].T, dtype=np.float32)
        mean32 = mean.astype(np.float32)
        out = np.empty((n, dims), dtype=np.float32)
        step = 100_000

        def project(lo: int) -> None:
            out[lo : lo + step] = (_rows_f32(x, lo, lo + step) - mean32) @ comps.T

        _map_blocks(project, range(0, n, step))
        return _normalize_own(out)
    from sklearn.decomposition import PCA

    if fit_rows is not None:
        fit_idx = np.sort(np.asarray(fit_rows, dtype=np.int64))
    elif n <= sample_max:
        fit_idx = np.arange(n)
    else:
        fit_idx = np.sort(rng.choice(n, sample_max, replace=False))
    pca = PCA(n_components=dims, svd_solver="randomized", random_state=seed)
    pca.fit(np.asarray(x[fit_idx], dtype=np.float32))
    out = np.empty((n, dims), dtype=np.float32)
    step = 100_000

    def project(lo: int) -> None:
        out[lo : lo + step] = pca.transform(_rows_f32(x, lo, lo + step))

    _map_blocks(project, range(0, n, step))
    return _normalize_own(out)


def _hdbscan(
    x: np.ndarray, min_cluster_size: int, min_samples: int | None, eps: float, n_jobs: int
) -> np.ndarray:
    from sklearn.cluster import HDBSCAN

    n = x.shape[0]
    mcs = max(2, min(min_cluster_size, n))
    ms = None if min_samples is None else max(1, min(min_samples, n - 1))
    model = HDBSCAN(
        min_cluster_size=mcs,
        min_samples=ms,
        cluster_selection_epsilon=eps,
        metric="euclidean",  # on unit vectors: monotone in cosine
        n_jobs=n_jobs,
        copy=True,
    )
    return model.fit_predict(np.asarray(x, dtype=np.float64))


def _agglomerative(x: np.ndarray, distance: float) -> np.ndarray:
    from sklearn.cluster import AgglomerativeClustering

    if x.shape[0] > 15_000:
        raise ValueError("agglomerative clustering needs n^2 memory; use it on <= 15,000 points")
    model = AgglomerativeClustering(
        n_clusters=None, distance_threshold=distance, metric="cosine", linkage="average"
    )
    return model.fit_predict(x)


def _relabel_by_size(labels: np.ndarray, weights: np.ndarray, min_points: int) -> np.ndarray:
    """Noise for ideas under min_points; ids 0.. by decreasing weighted size (ties: first row)."""
    out = np.full(labels.shape[0], -1, dtype=np.int64)
    valid = labels >= 0
    if not valid.any():
        return out
    ids, inv = np.unique(labels[valid], return_inverse=True)
    size = np.bincount(inv, weights=weights[valid])
    first = np.full(ids.shape[0], labels.shape[0], dtype=np.int64)
    np.minimum.at(first, inv, np.flatnonzero(valid))
    keep = size >= min_points
    order = [i for i in np.lexsort((first, -size)) if keep[i]]
    new_id = np.full(ids.shape[0], -1, dtype=np.int64)
    new_id[order] = np.arange(len(order))
    out[valid] = new_id[inv]
    return out


@fixed_threads
def cluster_vectors(
    vectors: np.ndarray,
    *,
    weights: np.ndarray | None = None,
    params: ClusterParams | None = None,
    texts: list[str] | None = None,
) -> np.ndarray:
    """Cluster L2-normalised rows into ideas; return labels (n,), -1 = noise.

    weights: how many proposals each row stands for (duplicate counts from
    `dedupe`); they count in the graph (a node weighs as its copies), in
    micro-cluster fitting and in `min_points`. texts: the row's texts; with them the
    rows carry their words too (`ClusterParams.lexical_weight`, `with_lexical`).
    Idea ids are 0..k-1 by decreasing weighted size. Deterministic for a seed, on any number
    of cores (it runs with `cluster_threads()` threads).
    Raises ValueError on malformed input; n = 0 gives an empty array, and fewer
    than 3 rows are all noise (nothing to group).
    """
    params = params or ClusterParams()
    if params.merge_ratio is not None and not 0.0 < params.merge_ratio <= 1.0:
        raise ValueError(f"merge_ratio must be in (0, 1], not {params.merge_ratio!r}")
    if not (math.isfinite(params.edge_power) and params.edge_power > 0):
        raise ValueError(f"edge_power must be a positive number, not {params.edge_power!r}")
    if isinstance(params.ensemble_runs, bool) or not (
        isinstance(params.ensemble_runs, int) and params.ensemble_runs >= 1
    ):
        raise ValueError(f"ensemble_runs must be an integer >= 1, not {params.ensemble_runs!r}")
    if not (math.isfinite(params.lexical_weight) and params.lexical_weight >= 0):
        raise ValueError(f"lexical_weight must be a number >= 0, not {params.lexical_weight!r}")
    if isinstance(params.lexical_dims, bool) or not (
        isinstance(params.lexical_dims, int) and params.lexical_dims >= 1
    ):
        raise ValueError(f"lexical_dims must be an integer >= 1, not {params.lexical_dims!r}")
    if params.persistence_ratio is not None and not (
        math.isfinite(params.persistence_ratio) and params.persistence_ratio > 0
    ):
        raise ValueError(
            f"persistence_ratio must be a positive number, not {params.persistence_ratio!r}"
        )
    x = _as_matrix(vectors)
    n = x.shape[0]
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (n,):
        raise ValueError(f"weights must have shape ({n},), got {w.shape}")
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if not np.all(np.isfinite(np.asarray(x[: min(n, 10_000)], dtype=np.float32))):
        raise ValueError("vectors contain NaN or infinity")
    total = float(w.sum())
    min_points = (
        params.min_points if params.min_points is not None else max(3, int(total // 10_000))
    )
    if n < 3:
        return np.full(n, -1, dtype=np.int64)
    embedded = x  # the large path draws its sample by a hash of the embeddings alone
    if texts is not None:
        x = with_lexical(
            x,
            texts,
            weight=params.lexical_weight,
            dims=params.lexical_dims,
            seed=params.seed,
            frame=frame_of(params, texts),
        )

    if params.method == "graph":
        raw = _cluster_graph(x, w, params, key_rows=embedded)
    elif n <= params.small_max:
        z = _pca(x, params.pca_dims, params.seed)
        if params.method == "agglomerative":
            raw = _agglomerative(z, params.agglomerative_distance)
        else:
            mcs = params.min_cluster_size or _auto_min_cluster_size(n)
            ms = params.min_samples or max(2, mcs // 3)
            raw = _hdbscan(z, mcs, ms, params.cluster_selection_epsilon, params.n_jobs)
    else:
        raw = _cluster_large(x, w, params)
    labels = _relabel_by_size(raw, w, min_points)
    if (
        isinstance(params.noise_reassign_threshold, str)
        and params.noise_reassign_threshold != "auto"
    ):
        raise ValueError(
            "noise_reassign_threshold must be a float, 'auto' or None, "
            f"not {params.noise_reassign_threshold!r}"
        )
    if params.noise_reassign_threshold is not None:
        labels = _reassign_noise(x, labels, w, params.noise_reassign_threshold)
    if params.method == "graph" and params.merge_ratio is not None:
        labels = _merge_similar_ideas(x, labels, w, params.merge_ratio)
    return labels


def _idea_sums(
    x: np.ndarray, labels: np.ndarray, w: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per idea (ids 0..k-1): weighted sum of its rows (k, dim) float64, and its weight (k,)."""
    from scipy.sparse import csr_matrix

    step = _block_rows(x.shape[1]) * 4
    cols = 128  # float64 copies of 128 columns at a time: a tenth of a block's memory

    def block_sums(lo: int) -> np.ndarray:
        lab = labels[lo : lo + step]
        ok = np.flatnonzero(lab >= 0)
        # (k x block) sparse weights @ block rows: a product instead of np.add.at (5x faster);
        # each column's sum is the same whichever columns are multiplied with it
        onehot = csr_matrix((w[lo : lo + step][ok], (lab[ok], ok)), shape=(k, lab.shape[0]))
        part = np.empty((k, x.shape[1]), dtype=np.float64)
        for c in range(0, x.shape[1], cols):
            part[:, c : c + cols] = onehot @ np.asarray(x[lo : lo + step, c : c + cols], np.float64)
        return part

    # the blocks' sums are added in their order, as the loop added them, a few at a time
    sums = np.zeros((k, x.shape[1]), dtype=np.float64)
    starts = range(0, x.shape[0], step)
    group = max(1, cluster_workers())
    for first in range(0, len(starts), group):
        for part in _map_blocks(block_sums, starts[first : first + group]):
            sums += part
    ok = labels >= 0
    return sums, np.bincount(labels[ok], weights=w[ok], minlength=k).astype(np.float64)


def _merge_similar_ideas(
    x: np.ndarray, labels: np.ndarray, w: np.ndarray, ratio: float
) -> np.ndarray:
    """Greedily merge the two ideas whose proposals are closest, relative to their cohesion.

    With s_a the sum of idea a's unit rows (a row counting w times) and W_a its weight,
    the mean cosine between proposals of a and b is s_a.s_b / (W_a W_b), and inside a
    (distinct pairs; copies of one text count as cosine 1) (|s_a|^2 - W_a) / (W_a^2 - W_a).
    The pair with the highest between / sqrt(within_a within_b) merges while that is at
    least `ratio`; an idea of one proposal counts as fully cohesive. O(k^2) memory and
    O(k^2) per merge on k ideas, O(n d) to sum the rows once. Ids are then renumbered by
    size (`_relabel_by_size`); noise stays noise.
    """
    k = int(labels.max()) + 1 if labels.size else 0
    if k < 2:
        return labels
    sums, size = _idea_sums(x, labels, w, k)
    gram = sums @ sums.T
    alive = size > 0

    def cohesion(a: int) -> float:
        pairs = size[a] * size[a] - size[a]
        return float((gram[a, a] - size[a]) / pairs) if pairs > 1e-9 else 1.0

    within = np.array([cohesion(a) for a in range(k)])
    parent = np.arange(k)
    while alive.sum() > 1:
        scale = np.sqrt(np.maximum(within, 1e-9))
        safe = np.maximum(size, 1e-12)
        score = gram / np.outer(safe * scale, safe * scale)
        score[~alive, :] = -np.inf
        score[:, ~alive] = -np.inf
        np.fill_diagonal(score, -np.inf)
        a, b = sorted(np.unravel_index(int(np.argmax(score)), score.shape))
        if score[a, b] < ratio:
            break
        # b joins a (the lower id, so that ties resolve the same way every run)
        gram[a, :] += gram[b, :]
        gram[:, a] += gram[:, b]  # gram[a, a] is now |s_a + s_b|^2
        size[a] += size[b]
        size[b] = 0.0
        alive[b] = False
        parent[parent == b] = a
        within[a] = cohesion(a)
    merged = np.where(labels >= 0, parent[np.maximum(labels, 0)], -1)
    return _relabel_by_size(merged, w, 0)


def _reassign_noise(
    x: np.ndarray, labels: np.ndarray, w: np.ndarray, threshold: float | str
) -> np.ndarray:
    """Noise rows join the nearest idea when their cosine to its centroid reaches `threshold`."""
    if not (labels >= 0).any() or not (labels < 0).any():
        return labels
    cents = idea_centroids(x, labels, weights=w)
    if threshold == "auto":
        member = np.flatnonzero(labels >= 0)
        sims = np.empty(member.shape[0], dtype=np.float32)
        step = 100_000

        def member_sims(lo: int) -> None:
            rows = member[lo : lo + step]
            v = _normalize(_rows_f32(x[rows], 0, rows.shape[0]))
            sims[lo : lo + step] = np.einsum("ij,ij->i", v, cents[labels[rows]])

        _map_blocks(member_sims, range(0, member.shape[0], step))
        threshold = float(np.quantile(sims, 0.05))
    elif isinstance(threshold, str):
        raise ValueError(
            f"noise_reassign_threshold must be a float, 'auto' or None, not {threshold!r}"
        )
    labels = labels.copy()
    noise = np.flatnonzero(labels < 0)
    labels[noise] = assign_to_ideas(x[noise], cents, threshold=float(threshold)).labels
    return labels


def _micro_clusters(
    z: np.ndarray, w: np.ndarray, k: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MiniBatchKMeans on rows z: (micro label per row 0..m-1, centroids (m, d) normalised, weights (m,)).

    Empty micro-clusters are dropped. Costs O(n k d) per epoch; ~200 mini-batch steps.
    """
    from sklearn.cluster import MiniBatchKMeans

    n = z.shape[0]
    k = max(2, min(k, n))
    batch = int(min(4096, max(1024, n // 8)))
    # Aim for ~200 mini-batch steps: one epoch is enough at millions of rows.
    epochs = int(min(20, max(1, math.ceil(200 * batch / n))))
    km = MiniBatchKMeans(
        n_clusters=k,
        batch_size=batch,
        n_init=1,
        max_iter=epochs,
        random_state=seed,
        compute_labels=False,
        max_no_improvement=10,
    )
    km.fit(z, sample_weight=w)
    micro = np.empty(n, dtype=np.int64)
    step = 100_000
    for lo in range(0, n, step):
        micro[lo : lo + step] = km.predict(z[lo : lo + step])
    micro_w = np.bincount(micro, weights=w, minlength=k)
    used = np.flatnonzero(micro_w > 0)
    remap = np.full(k, -1, dtype=np.int64)
    remap[used] = np.arange(used.shape[0])
    return remap[micro], _normalize(km.cluster_centers_[used]), micro_w[used]


def _assign_nearest(z: np.ndarray, cents: np.ndarray) -> np.ndarray:
    """Index of the nearest centroid (largest dot product) for each unit row, blocked."""
    out = np.empty(z.shape[0], dtype=np.int64)
    step = _block_rows(cents.shape[0])

    def nearest(lo: int) -> None:
        out[lo : lo + step] = (z[lo : lo + step] @ cents.T).argmax(axis=1)

    _map_blocks(nearest, range(0, z.shape[0], step))
    return out


def _weighted_centroids(z: np.ndarray, w: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Weighted sum of the rows of each label 0..k-1 (k, d) float32; a sparse product, not add.at."""
    from scipy.sparse import csr_matrix

    onehot = csr_matrix(
        (w.astype(np.float32), (labels, np.arange(labels.shape[0]))), shape=(k, labels.shape[0])
    )
    return np.asarray(onehot @ z, dtype=np.float32)


def _spherical_kmeans(
    z: np.ndarray,
    w: np.ndarray,
    k: int,
    rng: np.random.Generator,
    *,
    iters: int = 10,
    fit_max: int | None = None,
) -> np.ndarray:
    """Spherical k-means (cosine) on unit rows z, weighted by w: k unit centroids (k, d) float32.

    k-means++ seeding (D^2 sampling, weighted) then Lloyd steps until no row changes centroid or
    `iters` steps. Fitted on a seeded sample of at most `fit_max` rows. Empty clusters keep their
    previous centroid. Cost O(n k d) per step, the k-means++ seeding O(n k d) once.
    """
    n = z.shape[0]
    if fit_max is not None and n > fit_max:
        idx = np.sort(rng.choice(n, fit_max, replace=False))
        z, w = z[idx], w[idx]
        n = fit_max
    k = max(1, min(k, n))
    wf = np.asarray(w, dtype=np.float64)
    # k-means++: next centre drawn with probability ~ w * squared distance to the nearest one.
    chosen = [int(rng.choice(n, p=wf / wf.sum()))]
    d2 = np.maximum(2.0 - 2.0 * (z @ z[chosen[0]]).astype(np.float64), 0.0)
    for _ in range(1, k):
        p = wf * d2
        total = p.sum()
        if total <= 0:  # fewer distinct rows than k
            break
        nxt = int(rng.choice(n, p=p / total))
        chosen.append(nxt)
        np.minimum(d2, np.maximum(2.0 - 2.0 * (z @ z[nxt]).astype(np.float64), 0.0), out=d2)
    cents = np.array(z[chosen], dtype=np.float32)
    labels = None
    for _ in range(iters):
        new = _assign_nearest(z, cents)
        if labels is not None and np.array_equal(new, labels):
            break
        labels = new
        sums = _weighted_centroids(z, wf, labels, cents.shape[0])
        norms = np.linalg.norm(sums, axis=1)
        ok = norms > 0
        cents[ok] = sums[ok] / norms[ok, None]
    return cents


def _micro_clusters_two_level(
    z: np.ndarray, w: np.ndarray, k: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """About k micro-clusters of unit rows z in two levels; same return as `_micro_clusters`.

    Flat k-means costs O(n k d) per step and its k-means++ seeding O(k^2 d) per candidate row
    (that seeding alone took 85 s of 111 s at 75k rows, k = 5,000). Here: c = sqrt(k) coarse
    cells (spherical k-means fitted on at most 256 rows per cell, then one assignment pass), then inside
    each cell k x (cell rows / n) micro-clusters fitted on at most 64 rows per micro-cluster and
    one assignment pass over the cell. Total O(n sqrt(k) d) per pass instead of O(n k d): ~70x
    less arithmetic at k = 5,000. A micro-cluster never straddles two cells, which costs little
    since the kNN graph built over the micro-centroids links neighbours across cells.
    Deterministic for a seed (one generator per cell).
    """
    n = z.shape[0]
    k = max(2, min(k, n))
    wf = np.asarray(w, dtype=np.float64)
    n_cells = max(1, min(k, int(round(math.sqrt(k)))))
    coarse_cents = _spherical_kmeans(
        z, wf, n_cells, np.random.default_rng([seed, 0]), iters=10, fit_max=256 * n_cells
    )
    coarse = _assign_nearest(z, coarse_cents)
    order = np.argsort(coarse, kind="stable")
    bounds = np.searchsorted(coarse[order], np.arange(coarse_cents.shape[0] + 1))
    sizes = np.diff(bounds)
    # k split over the cells by their number of rows (largest remainders), 1 <= k_c <= rows.
    share = k * sizes / n
    k_cells = np.floor(share).astype(np.int64)
    rest = k - int(k_cells.sum())
    if rest > 0:
        k_cells[np.argsort(-(share - k_cells), kind="stable")[:rest]] += 1
    k_cells = np.minimum(np.maximum(k_cells, sizes > 0), sizes)
    micro = np.empty(n, dtype=np.int64)
    cell_parts: list[np.ndarray] = []
    cent_parts: list = []
    offset = 0
    for c in range(coarse_cents.shape[0]):
        rows = order[bounds[c] : bounds[c + 1]]
        if rows.shape[0] == 0:
            continue
        zc = z[rows]
        if k_cells[c] <= 1:
            lab = np.zeros(rows.shape[0], dtype=np.int64)
            m = 1
        else:
            cents = _spherical_kmeans(
                zc,
                wf[rows],
                int(k_cells[c]),
                np.random.default_rng([seed, 1 + c]),
                iters=_CELL_ITERS,
                fit_max=_CELL_FIT * int(k_cells[c]),
            )
            lab = _assign_nearest(zc, cents)
            m = cents.shape[0]
        micro[rows] = offset + lab
        cell_parts.append(np.full(m, c, dtype=np.int64))
        cent_parts.append(cents if k_cells[c] > 1 else None)
        offset += m
    if _REFINE_ITERS:
        micro = _refine_micro(
            z, wf, micro, offset, np.concatenate(cell_parts), coarse, coarse_cents
        )
    micro_w = np.bincount(micro, weights=wf, minlength=offset)
    used = np.flatnonzero(micro_w > 0)
    remap = np.full(offset, -1, dtype=np.int64)
    remap[used] = np.arange(used.shape[0])
    micro = remap[micro]
    cents = _normalize(_weighted_centroids(z, wf, micro, used.shape[0]))
    return micro, cents, micro_w[used]


# Two-level micro-clusters: Lloyd steps and sample size (rows per micro-cluster) inside a
# cell, then refinement steps over the micro-clusters of each cell's nearest cells.
_CELL_ITERS = 10
_CELL_FIT = 64
_REFINE_ITERS = 2
_REFINE_CELLS = 4


def _refine_micro(z, wf, micro, m, cell_of_micro, coarse, coarse_cents):
    """Lloyd steps over all micro-clusters, each row compared with those of its cell's nearest cells."""
    n_cells = coarse_cents.shape[0]
    r = min(_REFINE_CELLS, n_cells)
    near_cells = np.argsort(-(coarse_cents @ coarse_cents.T), axis=1, kind="stable")[:, :r]
    order = np.argsort(coarse, kind="stable")
    bounds = np.searchsorted(coarse[order], np.arange(n_cells + 1))
    by_cell = [np.flatnonzero(cell_of_micro == c) for c in range(n_cells)]
    for _ in range(_REFINE_ITERS):
        sums = _weighted_centroids(z, wf, micro, m)
        norms = np.linalg.norm(sums, axis=1)
        ok = norms > 0
        cents = np.zeros_like(sums)
        cents[ok] = sums[ok] / norms[ok, None]
        new = micro.copy()
        for c in range(n_cells):
            rows = order[bounds[c] : bounds[c + 1]]
            if rows.shape[0] == 0:
                continue
            cand = np.concatenate([by_cell[j] for j in near_cells[c]])
            cand = cand[ok[cand]]
            new[rows] = cand[_assign_nearest(z[rows], cents[cand])]
        if np.array_equal(new, micro):
            break
        micro = new
    return micro


def _micro_point_graph(
    z: np.ndarray,
    w: np.ndarray,
    micro: np.ndarray,
    cents: np.ndarray,
    k: int,
    seed: int,
    *,
    power: float = 1.0,
    per_micro: int = 64,
    candidates: int = 8,
):
    """kNN graph of the texts themselves, summed over micro-clusters.

    Each text's k nearest texts are searched among the texts of its micro-cluster's
    `candidates` nearest micro-clusters (itself included), with the same edge weights as the
    direct graph (cosine ** power x sqrt(w_i w_j), a self-loop of w min(w - 1, k) / 2 per
    text). The graph is then summed over micro-clusters: edges between two micro-clusters add
    up, edges inside one become its self-loop. Leiden on this graph continues exactly where its own
    first level would stand had it merged the texts of each micro-cluster, so the micro path
    keeps the direct path's granularity. Above `per_micro` texts a micro-cluster is
    represented by a seeded sample of that many, each weighing for the rest.
    Cost O(n_s x candidates x s x p) with n_s sampled texts and s texts per micro-cluster.

    Returns (graph (m x m) CSR without diagonal, self-loop weight (m,), isolated text rows).
    """
    from scipy.sparse import csr_matrix

    n, m = z.shape[0], cents.shape[0]
    wf = np.asarray(w, dtype=np.float64)
    rng = np.random.default_rng([seed, 3])
    order = np.argsort(micro, kind="stable")
    bounds = np.searchsorted(micro[order], np.arange(m + 1))
    members = [order[bounds[a] : bounds[a + 1]] for a in range(m)]
    # Sampled texts per micro-cluster and how much each weighs (the micro-cluster's total).
    picked = []
    for a in range(m):
        rows = members[a]
        if rows.shape[0] > per_micro:
            rows = np.sort(rng.choice(rows, per_micro, replace=False))
        picked.append(rows)
    pts = np.concatenate(picked)
    pt_micro = micro[pts]
    total_w = np.bincount(micro, weights=wf, minlength=m)
    sample_w = np.bincount(pt_micro, weights=wf[pts], minlength=m)
    pw = wf[pts] * (total_w / np.maximum(sample_w, 1e-12))[pt_micro]
    p_bounds = np.concatenate([[0], np.cumsum([r.shape[0] for r in picked])])
    zp = np.ascontiguousarray(z[pts])
    # candidate micro-clusters by centroid similarity
    r = min(candidates, m)
    near = np.empty((m, r), dtype=np.int64)
    step = _block_rows(m)
    for lo in range(0, m, step):
        s = cents[lo : lo + step] @ cents.T
        near[lo : lo + step] = np.argpartition(-s, r - 1, axis=1)[:, :r]
    src, dst, sim_l = [], [], []
    nearest = np.full(pts.shape[0], -1.0, dtype=np.float32)
    for a in range(m):
        lo, hi = p_bounds[a], p_bounds[a + 1]
        if hi == lo:
            continue
        cand = np.concatenate([np.arange(p_bounds[b], p_bounds[b + 1]) for b in near[a]])
        s = zp[lo:hi] @ zp[cand].T
        s[cand[None, :] == np.arange(lo, hi)[:, None]] = -np.inf  # no self loops
        kk = max(1, min(k, cand.shape[0] - 1))
        part = np.argpartition(-s, kk - 1, axis=1)[:, :kk]
        vals = np.take_along_axis(s, part, axis=1)
        nearest[lo:hi] = vals.max(axis=1)
        src.append(np.repeat(np.arange(lo, hi), kk))
        dst.append(cand[part].ravel())
        sim_l.append(vals.ravel())
    src_a, dst_a = np.concatenate(src), np.concatenate(dst)
    vals = np.maximum(np.concatenate(sim_l), 0.0).astype(np.float64)
    vals[~np.isfinite(vals)] = 0.0
    vals **= power
    vals *= np.sqrt(pw[src_a] * pw[dst_a])
    n_p = pts.shape[0]
    g = csr_matrix((vals, (src_a, dst_a)), shape=(n_p, n_p))
    g = g.maximum(g.T).tocsr()
    loops_p = pw * np.minimum(pw - 1, k) / 2
    isolated_p = _far_out(nearest)
    if isolated_p.any():
        keep = (~isolated_p).astype(np.float64)
        g = g.multiply(keep[:, None]).multiply(keep[None, :]).tocsr()
        loops_p = loops_p * keep
    onehot = csr_matrix((np.ones(n_p), (np.arange(n_p), pt_micro)), shape=(n_p, m))
    agg = (onehot.T @ g @ onehot).tocsr()
    diag = agg.diagonal()
    loops = diag / 2 + np.bincount(pt_micro, weights=loops_p, minlength=m)
    agg.setdiag(0)
    agg.eliminate_zeros()
    isolated = np.zeros(n, dtype=bool)
    isolated[pts[isolated_p]] = True
    return agg, loops, isolated


def _knn_graph(z: np.ndarray, k: int, node_w: np.ndarray | None = None, power: float = 1.0):
    """Symmetric k-nearest-neighbour graph of unit rows, edge weight = cosine ** power (>= 0).

    Returns (graph as scipy CSR, cosine of each node to its nearest other node).
    node_w: how many rows each node stands for (duplicates, micro-clusters); edges are
    scaled by sqrt(w_i w_j).
    Exact, blocked: O(m^2 d) time, O(block x m) memory.
    """
    from scipy.sparse import csr_matrix

    m = z.shape[0]
    k = max(1, min(k, m - 1))
    nbr = np.empty((m, k), dtype=np.int64)
    sim = np.empty((m, k), dtype=np.float32)
    step = _block_rows(m)
    for lo in range(0, m, step):
        hi = min(m, lo + step)
        s = z[lo:hi] @ z.T
        s[np.arange(hi - lo), np.arange(lo, hi)] = -np.inf  # no self loops
        part = np.argpartition(-s, k - 1, axis=1)[:, :k]
        nbr[lo:hi] = part
        sim[lo:hi] = np.take_along_axis(s, part, axis=1)
    vals = (np.maximum(sim, 0.0).astype(np.float64) ** power).ravel()
    rows = np.repeat(np.arange(m), k)
    cols = nbr.ravel()
    if node_w is not None:
        vals = vals * np.sqrt(node_w[rows] * node_w[cols])
    g = csr_matrix((vals, (rows, cols)), shape=(m, m))
    g = g.maximum(g.T).tocsr()
    g.eliminate_zeros()
    return g, sim.max(axis=1)


def _far_out(nearest: np.ndarray) -> np.ndarray:
    """Rows whose cosine to their nearest neighbour is an outlier by Tukey's far-out fence.

    Below q1 - 3 IQR, the IQR counted as at least 0.05 in cosine so that near-identical data
    flags nothing. Such a row still has neighbours in a kNN graph; the callers keep it out
    of the ideas (it becomes noise unless it is close enough to an idea).
    """
    if not nearest.size:
        return np.zeros(0, dtype=bool)
    q1, q3 = np.quantile(nearest, [0.25, 0.75])
    return nearest < q1 - 3.0 * max(q3 - q1, 0.05)


_IGRAPH_RNG_LOCK = threading.Lock()


def _leiden(
    graph, resolution: float, seed: int, self_loops: np.ndarray | None = None
) -> np.ndarray:
    """Leiden communities of a weighted sparse graph; label per node (see `_leiden_runs`)."""
    return _leiden_runs(graph, resolution, [seed], self_loops)[0]


def _leiden_runs(
    graph, resolution: float, seeds: list[int], self_loops: np.ndarray | None = None
) -> list[np.ndarray]:
    """Leiden communities of a weighted sparse graph, once per seed; labels per node.

    Modularity with a resolution (python-igraph's `Graph.community_leiden`, objective
    "modularity", which is leidenalg's RBConfigurationVertexPartition), iterated until no
    move improves it. Leiden refines each community before aggregating, so every idea is a
    connected part of the graph, which Louvain does not guarantee. igraph's own
    implementation gives the same kind of partition as leidenalg (used before) about 25x
    faster here (0.08 s against 2.3 s on 4,000 nodes), which is what makes the consensus of
    `_consensus_leiden` affordable. igraph draws its random numbers from a Python generator:
    a `random.Random(seed)` set for the call (under a lock: the setting is global), so a
    seed gives the same partition. Labels are numbered by each community's first node, so
    they do not depend on the library's own order. The igraph graph is built once for all
    seeds (converting millions of edges costs more than a run).
    """
    import random

    import igraph
    from scipy.sparse import triu

    m = graph.shape[0]
    upper = triu(graph, k=1).tocoo()
    edges = np.column_stack([upper.row, upper.col])
    weights = upper.data
    if self_loops is not None:
        idx = np.flatnonzero(self_loops > 0)
        edges = np.vstack([edges, np.column_stack([idx, idx])])
        weights = np.concatenate([weights, self_loops[idx]])
    g = igraph.Graph(n=m, edges=edges.tolist())
    weights = weights.astype(np.float64).tolist()
    # Given explicitly: python-igraph 1.0 does not derive them from the edge weights, and
    # its partitions were then far below leidenalg's modularity.
    strength = g.strength(weights=weights, loops=True)
    out = []
    for seed in seeds:
        with _IGRAPH_RNG_LOCK:
            igraph.set_random_number_generator(random.Random(seed))
            try:
                partition = g.community_leiden(
                    objective_function="modularity",
                    weights=weights,
                    node_weights=strength,
                    resolution=resolution,
                    n_iterations=-1,
                )
            finally:
                igraph.set_random_number_generator(random)
        _, first, inverse = np.unique(
            np.asarray(partition.membership), return_index=True, return_inverse=True
        )
        rank = np.empty(first.size, dtype=np.int64)
        rank[np.argsort(first)] = np.arange(first.size)
        out.append(rank[inverse])
    return out


def _consensus_leiden(
    graph, resolution: float, seed: int, self_loops: np.ndarray, runs: int
) -> np.ndarray:
    """Leiden on the graph reweighed by how often `runs` Leiden partitions agree on each edge.

    Consensus clustering (Lancichinetti and Fortunato, "Consensus clustering in complex
    networks", 2012), one round: partitions with seeds seed .. seed + runs - 1, an edge keeps
    its weight times the share of them that put both of its ends in the same community, and
    a final Leiden (seed `seed`, same resolution and self-loops) cuts that graph. Edges that
    only some visiting orders keep inside a community weaken, so the final cut follows the
    boundaries every run sees. runs = 1 is plain Leiden. Deterministic for a seed.
    """
    if runs <= 1:
        return _leiden(graph, resolution, seed, self_loops)
    from scipy.sparse import csr_matrix, triu

    upper = triu(graph, k=1).tocoo()
    agree = np.zeros(upper.data.shape[0])
    for labels in _leiden_runs(graph, resolution, list(range(seed, seed + runs)), self_loops):
        agree += labels[upper.row] == labels[upper.col]
    m = graph.shape[0]
    reweighed = csr_matrix((upper.data * (agree / runs), (upper.row, upper.col)), shape=(m, m))
    reweighed = (reweighed + reweighed.T).tocsr()
    reweighed.eliminate_zeros()
    return _leiden(reweighed, resolution, seed, self_loops)


# The resolutions `_persistent_ideas` reads, in steps of sqrt(2): four coarser, two finer.
PERSISTENCE_FACTORS = tuple(2.0 ** (i / 2) for i in range(-4, 3))
PERSISTENCE_MIN_SHARE = 0.1  # a part under this share of its community is not a split


def _majority(labels: np.ndarray, of: np.ndarray, mass: np.ndarray) -> np.ndarray:
    """For each community of ``labels``, the community of ``of`` holding most of its mass
    (ties: the lower label)."""
    n_of = int(of.max()) + 1
    pair, inverse = np.unique(labels.astype(np.int64) * n_of + of, return_inverse=True)
    held = np.bincount(inverse, weights=mass)
    source, target = pair // n_of, pair % n_of
    order = np.lexsort((target, -held, source))  # by community, most mass first
    first = np.ones(order.size, dtype=bool)
    first[1:] = source[order][1:] != source[order][:-1]
    out = np.zeros(int(labels.max()) + 1, dtype=np.int64)
    out[source[order][first]] = target[order][first]
    return out


def _persistent_ideas(levels: list[np.ndarray], mass: np.ndarray, ratio: float) -> np.ndarray:
    """The ideas of ``levels[d]`` (d = the default resolution), some gathered by persistence.

    levels: a node's community at each resolution of `PERSISTENCE_FACTORS`, coarse to fine.
    Each idea belongs to the coarser community holding most of its mass at each coarser
    resolution, which makes a tree; a community is born where its parent splits (into two
    parts of at least `PERSISTENCE_MIN_SHARE` of its mass) and dies where it splits in turn;
    an idea dies at the first finer resolution that cuts it in two such parts (or lives to
    the finest). From the leaves up, a community is kept instead of the ideas chosen under it
    when its mass (its nodes' ``mass``) times the steps it lives is more than ``ratio`` times
    theirs: HDBSCAN's excess of mass (Campello et al. 2013) over Leiden's resolution instead
    of a density.
    Returns labels over the nodes; every chosen set of ideas is one label.
    """
    d = PERSISTENCE_FACTORS.index(1.0)
    base, top = levels[d], len(levels)
    n_ideas = int(base.max()) + 1
    idea_mass = np.bincount(base, weights=mass, minlength=n_ideas)
    path = np.stack([_majority(base, levels[j], mass) for j in range(d)], axis=1)
    death = np.full(n_ideas, top, dtype=np.int64)
    for j in range(d + 1, top):
        home = _majority(levels[j], base, mass)
        part = np.bincount(levels[j], weights=mass)
        counted = np.bincount(
            home[part >= PERSISTENCE_MIN_SHARE * idea_mass[home]], minlength=n_ideas
        )
        death[(counted >= 2) & (death == top)] = j

    def groups_of(members: list[int], j: int) -> list[list[int]]:
        out: dict[int, list[int]] = {}
        for idea in members:
            out.setdefault(int(path[idea, j]), []).append(idea)
        return list(out.values())

    def choose(members: list[int], birth: int) -> tuple[float, list[list[int]]]:
        total = idea_mass[members].sum()
        j, parts = birth + 1, None
        while j < d:
            parts = groups_of(members, j)
            if sum(idea_mass[p].sum() >= PERSISTENCE_MIN_SHARE * total for p in parts) >= 2:
                break
            j += 1
        if j >= d:
            if len(members) == 1:
                return float(total * (death[members[0]] - birth)), [members]
            j, parts = d, [[idea] for idea in members]
        below, chosen = 0.0, []
        for part in parts:
            value, sets = choose(part, j)
            below += value
            chosen += sets
        own = float(total * (j - birth))
        return (own, [members]) if own > ratio * below else (below, chosen)

    relabel = np.empty(n_ideas, dtype=np.int64)
    label = 0
    for root in groups_of(list(range(n_ideas)), 0):
        for chosen in choose(root, 0)[1]:
            relabel[chosen] = label
            label += 1
    return relabel[base]


def _cluster_graph(
    x: np.ndarray, w: np.ndarray, params: ClusterParams, key_rows: np.ndarray | None = None
) -> np.ndarray:
    """PCA -> kNN graph -> Leiden -> labels; above graph_max_nodes rows, a sample or micro-clusters.

    Up to graph_max_nodes rows every row is a node (the direct path, unchanged since the
    quality benchmark's tuning). Above, by default (`large_graph="sample"`), a sample of
    graph_max_nodes rows goes through the direct path and the others take the idea of their
    nearest sampled rows (`_cluster_sampled`). With `large_graph="micro"` (or
    `micro_k`), m = min(graph_max_nodes / 2, n / 4) two-level micro-clusters are the nodes
    (`_micro_clusters_two_level`), and the graph between them is the texts' own kNN graph
    summed over micro-clusters (`_micro_point_graph`). key_rows: the rows the sample is
    drawn by (default x; the embeddings when x also carries the texts' words).
    """
    n = x.shape[0]
    if n > params.graph_max_nodes and params.large_graph == "sample" and not params.micro_k:
        return _cluster_sampled(x, w, params, key_rows=key_rows)
    z = _pca(x, params.large_pca_dims, params.seed, exact=n > params.graph_max_nodes)
    return _graph_communities(z, w, params)


_HASH_MULTIPLIERS: dict[int, np.ndarray] = {}


def _row_keys(x: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each row's bytes, vectorised (multiply-add, then a SplitMix64 finish).

    The same vector gives the same key in every run, so the same texts are sampled from one
    run to the next (a text keeps its stored vector). O(n d).
    """
    size = x.dtype.itemsize
    if size not in (2, 4, 8):
        raise ValueError(f"vectors of {x.dtype} cannot be hashed")
    d = x.shape[1]
    if d not in _HASH_MULTIPLIERS:
        rng = np.random.default_rng(0x5EED)
        _HASH_MULTIPLIERS[d] = rng.integers(1, 2**63, size=d, dtype=np.uint64) | np.uint64(1)
    mult = _HASH_MULTIPLIERS[d]
    keys = np.empty(x.shape[0], dtype=np.uint64)
    step = max(1, _BLOCK_CELLS // max(d, 1) // 4)
    with np.errstate(over="ignore"):
        for lo in range(0, x.shape[0], step):
            block = np.ascontiguousarray(x[lo : lo + step]).view(f"u{size}").astype(np.uint64)
            h = (block * mult).sum(axis=1, dtype=np.uint64)
            h ^= h >> np.uint64(30)
            h *= np.uint64(0xBF58476D1CE4E5B9)
            h ^= h >> np.uint64(27)
            h *= np.uint64(0x94D049BB133111EB)
            h ^= h >> np.uint64(31)
            keys[lo : lo + step] = h
    return keys


def _sample_keys(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted sampling keys, the same from run to run: rows with the largest keys are drawn first.

    Weighted sampling without replacement by Efraimidis and Spirakis (2006): row i draws
    u_i in (0, 1) and the rows with the largest u_i ** (1 / w_i), i.e. log(u_i) / w_i, come
    first; here u_i comes from a hash of the row's vector (`_row_keys`), not a generator, so
    a text is drawn or not whatever else the consultation holds, and a run with a few more
    answers samples almost the same texts. Frequent answers (w = their copies) come early.
    The first m rows by key are a weighted sample of m rows; a smaller sample is part of a
    larger one.
    """
    u = ((_row_keys(x) >> np.uint64(11)).astype(np.float64) + 0.5) / float(2**53)
    return np.log(u) / np.maximum(w, 1e-12)


def _cluster_sampled(
    x: np.ndarray, w: np.ndarray, params: ClusterParams, key_rows: np.ndarray | None = None
) -> np.ndarray:
    """The direct path on a stable sample of graph_max_nodes rows; the rest voted in.

    PCA is fitted on the sample, which then gets exactly the labels the direct path would
    give it alone. Every other row takes the idea its `graph_neighbors` nearest voters
    weigh most for, each voter weighing cosine ** edge_power whatever its copies (weighed by
    sqrt(copies), as in the graph, the answers repeated thousands of times outvote nearer
    texts; on 60,000 answers the unweighted vote also scores higher). The voters are the
    first half of the sample (itself a stable weighted sample), which halves the cost of the
    vote for the same stability (60,000 answers: ARI between seeds 0.945 either way).
    Measured against the micro-cluster path on 60,000 Grand Débat answers of the tuning half
    (docs/bench_engine_quality.md): ARI between seeds 0.58 -> 0.94, between a run and the
    next with 1 % more answers 0.59 -> 0.94, ARI/NMI against the question 0.19/0.42 ->
    0.29/0.45 (before the Horvitz-Thompson weights below; with them see the docs).
    Cost: the direct path on graph_max_nodes rows, PCA O(n d p), row hashes O(n d) and the
    vote O(n x graph_max_nodes / 2 x p) in blocks of 16M similarities; memory O(n p).
    """
    n = x.shape[0]
    keys = _sample_keys(x if key_rows is None else key_rows, w)
    order = np.argsort(-keys, kind="stable")
    s = np.sort(order[: params.graph_max_nodes])
    z = _pca(x, params.large_pca_dims, params.seed, fit_rows=s)
    # Each sampled text stands for its copies divided by its chance of being drawn
    # (Horvitz-Thompson): a text drawn with probability 1/50 weighs for the 50 like it. With
    # its copies alone, the texts with the most copies (drawn first) held most of the
    # graph's weight and one idea took 35 % of 500,000 answers (3.9 % with these weights).
    threshold = keys[order[params.graph_max_nodes - 1]]
    drawn = -np.expm1(threshold * w[s])  # P(key > threshold) = 1 - exp(threshold * w)
    labels = np.full(n, -1, dtype=np.int64)
    labels[s] = _graph_communities(z[s], w[s] / np.maximum(drawn, 1e-12), params)
    rest = np.sort(order[params.graph_max_nodes :])
    voters = np.sort(order[: max(1, params.graph_max_nodes // 2)])
    voted, nearest = _vote_from_sample(z[rest], z[voters], labels[voters], params)
    # As on the direct path, a row far from everything (its nearest voter an outlier by
    # Tukey's far-out fence) is left out; it becomes noise unless it is close to an idea.
    voted[_far_out(nearest)] = -1
    labels[rest] = voted
    return labels


def _vote_from_sample(
    zr: np.ndarray, zs: np.ndarray, labels_s: np.ndarray, params: ClusterParams
) -> tuple[np.ndarray, np.ndarray]:
    """Per row of zr: the label its nearest rows of zs weigh most for, and the top cosine.

    See `_cluster_sampled`.

    Exact: each row's `graph_neighbors` most similar sampled rows (ties at the last one all
    count), found with `np.partition` on blocks of the (rows x sample) similarities, several
    times faster than `argpartition` here; restricting the search to nearby k-means cells
    instead changed 14 % of the labels (4 cells of 100) or 4 % (30 of 100).
    """
    k = max(1, min(params.graph_neighbors, zs.shape[0]))
    k_labels = int(labels_s.max()) + 1
    out = np.empty(zr.shape[0], dtype=np.int64)
    nearest = np.empty(zr.shape[0], dtype=np.float32)
    # Blocks of about a million similarities (4 MB) stay in cache for the passes after the
    # product: 25 % faster than blocks of 16M on 1.2M rows x 5,000 voters.
    step = max(1, 1_000_000 // max(zs.shape[0], 1))

    def vote(lo: int) -> None:
        sim = zr[lo : lo + step] @ zs.T
        flat, cells, top = _top_k_cells(sim, k)
        rows, cols = np.divmod(flat, sim.shape[1])
        vals = np.maximum(cells, 0.0).astype(np.float64) ** params.edge_power
        votes = np.bincount(
            rows * k_labels + labels_s[cols],
            weights=vals,
            minlength=sim.shape[0] * k_labels,
        ).reshape(sim.shape[0], k_labels)
        out[lo : lo + sim.shape[0]] = votes.argmax(axis=1)
        nearest[lo : lo + sim.shape[0]] = top

    def vote_span(lo: int) -> None:  # 64 blocks per task: the threads' overhead stays small
        for block in range(lo, min(lo + 64 * step, zr.shape[0]), step):
            vote(block)

    _map_blocks(vote_span, range(0, zr.shape[0], 64 * step))
    return out, nearest


def _top_k_cells(sim: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each row's k largest cells of `sim`, ties at the k-th all kept: (their flat indices,
    grouped by row, their values, the row maxima).

    About twice as fast as `np.partition` over whole rows of 5,000 (it was half of the vote
    at 2M): the k-th largest of the first max(500, 4 k) columns is a lower bound of the
    row's k-th largest, the cells above it (about 10 k per row) are the candidates, and the
    exact k-th largest is selected among them alone. Flat indices of the row-major mask
    come out grouped by row, in half the time of a 2-D `np.nonzero`.
    """
    n_rows, n_cols = sim.shape
    first = max(500, 4 * k)
    if n_cols <= 4 * first:
        top = np.partition(sim, n_cols - k, axis=1)[:, n_cols - k :]
        flat = np.flatnonzero(sim >= top[:, :1])
        return flat, sim.ravel()[flat], top.max(axis=1)
    bound = np.partition(sim[:, :first], first - k, axis=1)[:, first - k]
    flat = np.flatnonzero(sim >= bound[:, None])
    cells = sim.ravel()[flat]
    rows = flat // n_cols
    per_row = np.bincount(rows, minlength=n_rows)
    # the candidates' values in a (rows x most candidates) array padded with -inf
    pos = np.arange(flat.shape[0]) - np.repeat(np.cumsum(per_row) - per_row, per_row)
    padded = np.full((n_rows, int(per_row.max())), -np.inf, dtype=sim.dtype)
    padded[rows, pos] = cells
    width = padded.shape[1]
    top = np.partition(padded, width - k, axis=1)[:, width - k :]
    keep = cells >= top[rows, 0]
    return flat[keep], cells[keep], top.max(axis=1)


def _graph_communities(z: np.ndarray, w: np.ndarray, params: ClusterParams) -> np.ndarray:
    """Communities of rows z already projected (PCA, unit rows): direct kNN graph or micro-clusters.

    Cost with n rows, p = large_pca_dims: micro-clusters O(n sqrt(m) p) per pass; point
    graph O(n_s x 8 s p) with n_s <= 64 m sampled texts and s texts per micro-cluster;
    direct graph O(n^2 p) in blocks; Leiden about O(m k) per pass (in C).
    Measured (docs/bench_engine_scale.md): 75k unique texts in ~4 s of CPU on the
    micro-cluster path, against ~30 s (one BLAS thread) to 150 s (two, oversubscribed)
    with the earlier flat MiniBatchKMeans, whose k-means++ seeding at k = 5,000 was most
    of it.
    """
    n = z.shape[0]
    micro = None
    node_w = w
    k = params.graph_neighbors
    if params.micro_k or n > params.graph_max_nodes:
        # At least ~4 texts per micro-cluster: k-means with k close to n is slow (k-means++
        # init and reassignments) for no gain over the direct graph.
        m = params.micro_k or min(params.graph_max_nodes // 2, n // 4)
        micro, cents, node_w = _micro_clusters_two_level(z, w, m, params.seed)
    if micro is not None:
        graph, loops, isolated_rows = _micro_point_graph(
            z, w, micro, cents, k, params.seed, power=params.edge_power
        )
        isolated = np.zeros(cents.shape[0], dtype=bool)
    else:
        # Nodes stand for several proposals (duplicates): build the graph as if every
        # proposal were its own node. Its k neighbours are then mostly its own copies (a
        # self-loop of w * min(w - 1, k) / 2 unit edges) and edges to other nodes count
        # sqrt(w_i w_j) times. Without this, 300 copies of "aucun" weigh as much as one
        # answer and the communities merge unrelated frequent answers.
        graph, nearest = _knn_graph(z, k, node_w, power=params.edge_power)
        loops = node_w * np.minimum(node_w - 1, k) / 2
        # A node far from everything (`_far_out`) still has k neighbours in a kNN graph;
        # keep it out of the communities. Flags no row on the benchmark sets.
        isolated = _far_out(nearest)
        isolated_rows = None
        if isolated.any():
            keep = (~isolated).astype(np.float64)
            graph = graph.multiply(keep[:, None]).multiply(keep[None, :]).tocsr()
            loops = loops * keep
    resolution = params.resolution
    if resolution == "auto":
        # Capped at graph_max_nodes proposals (sqrt(10) by default): past that the graph
        # has micro-clusters for nodes, and a finer resolution splits homogeneous groups
        # (synthetic 2M x 512, 300 blobs: uncapped 45 gave ARI 0.51, capped 0.9).
        n_eff = min(float(w.sum()), float(params.graph_max_nodes))
        resolution = max(1.0, math.sqrt(n_eff / params.resolution_n0))
    labels = _consensus_leiden(graph, float(resolution), params.seed, loops, params.ensemble_runs)
    if params.persistence_ratio is not None:
        levels = [
            labels
            if f == 1.0
            else _consensus_leiden(
                graph, float(resolution) * f, params.seed, loops, params.ensemble_runs
            )
            for f in PERSISTENCE_FACTORS
        ]
        # a community's mass is its volume, the weight modularity gives it (self-loops twice)
        volume = np.asarray(graph.sum(axis=1)).ravel() + 2.0 * loops
        labels = _persistent_ideas(levels, volume, params.persistence_ratio)
    # Each isolated node is an idea of its own: one with enough duplicates stays an idea,
    # a lone text becomes noise (min_points) and joins an idea only if close enough.
    labels[isolated] = labels.max() + 1 + np.arange(int(isolated.sum()))
    if micro is None:
        return labels
    out = labels[micro]
    if isolated_rows is not None and isolated_rows.any():
        out[isolated_rows] = out.max() + 1 + np.arange(int(isolated_rows.sum()))
    return out


def _cluster_large(x: np.ndarray, w: np.ndarray, params: ClusterParams) -> np.ndarray:
    """PCA -> MiniBatchKMeans micro-clusters -> HDBSCAN/agglomerative on the centroids -> map back."""
    n = x.shape[0]
    if params.micro_k:
        k = params.micro_k
    elif params.expected_ideas:
        k = 20 * params.expected_ideas
    else:
        k = int(min(5000, max(50, n // 20)))
    k = max(2, min(k, n // 2))
    z = _pca(x, params.large_pca_dims, params.seed)
    micro, cents, _ = _micro_clusters(z, w, k, params.seed)
    if params.method == "agglomerative":
        cl = _agglomerative(cents, params.agglomerative_distance)
    else:
        cl = _hdbscan(
            cents,
            params.micro_min_cluster_size,
            params.micro_min_samples,
            params.cluster_selection_epsilon,
            params.n_jobs,
        )
    return cl[micro]


def idea_centroids(
    vectors: np.ndarray, labels: np.ndarray, *, weights: np.ndarray | None = None
) -> np.ndarray:
    """Weighted mean vector of each idea (ids 0..max), L2-normalised, float32 (k, dim)."""
    x = _as_matrix(vectors)
    labels = np.asarray(labels, dtype=np.int64)
    k = int(labels.max()) + 1 if labels.size else 0
    if k == 0:
        return np.zeros((0, x.shape[1]), dtype=np.float32)
    w = np.ones(x.shape[0]) if weights is None else np.asarray(weights, dtype=np.float64)
    sums, _ = _idea_sums(x, labels, w, k)
    return _normalize(sums)


def centroid_cosines(
    vectors: np.ndarray, labels: np.ndarray, centroids: np.ndarray, *, step: int = 50_000
) -> np.ndarray:
    """Cosine of each unit row to the centroid of its idea (`labels`, -1: none, cosine 0),
    float32 (n,); blocks of float16 rows become float32 one at a time, on `cluster_workers()`
    threads."""
    x = _as_matrix(vectors)
    labels = np.asarray(labels, dtype=np.int64)
    if labels.shape != (x.shape[0],):
        raise ValueError(f"labels must have shape ({x.shape[0]},), got {labels.shape}")
    cents = np.asarray(centroids, dtype=np.float32)
    sims = np.zeros(x.shape[0], dtype=np.float32)

    def block(lo: int) -> None:
        lab = labels[lo : lo + step]
        ok = lab >= 0
        if ok.any():
            rows = np.asarray(x[lo : lo + step][ok], dtype=np.float32)
            sims[lo : lo + step][ok] = np.einsum("ij,ij->i", rows, cents[lab[ok]])

    _map_blocks(block, range(0, x.shape[0], step))
    return sims


# ---------------------------------------------------------------------------
# (c) Labels
# ---------------------------------------------------------------------------


@dataclass
class Idea:
    """One idea: a group of proposals. Indices refer to the rows given to `label_ideas`."""

    id: int
    size: int  # proposals in the idea, duplicates counted
    share: float  # size / all proposals (noise included)
    keywords: list[str]
    central_indices: list[int]  # most central members first
    member_indices: np.ndarray = field(repr=False)
    centroid: np.ndarray = field(repr=False)


def top_keywords(
    texts: list[str],
    labels: np.ndarray,
    *,
    weights: np.ndarray | None = None,
    n_keywords: int = 8,
    max_texts_per_idea: int | None = 3_000,
    language: str = "fr",
) -> list[list[str]]:
    """Class-based TF-IDF keywords for ideas 0..max(labels) (BERTopic-style c-TF-IDF).

    Each idea is one document (its members' word counts, weighted by duplicate
    counts). Score = tf within the idea x log(1 + mean words per idea / word
    frequency over all ideas). Unigrams and bigrams, stop words removed first. Each word
    is shown once, in its best-scoring form (`_word_folder`: "logiciels" and "logiciel",
    "impôts" and "impots" are one word; the endings folded depend on `language`).
    An idea left without keywords (its words too rare for min_df, or all of two letters:
    "IR", "UE") gets a second pass over single words of two letters or more, min_df 1.
    An idea of more than `max_texts_per_idea` texts is read from a seeded sample of that
    many, weighted up to the idea's size (None: every text); noise is not read.
    """
    labels = np.asarray(labels, dtype=np.int64)
    k = int(labels.max()) + 1 if labels.size else 0
    if k == 0:
        return []
    w = np.ones(len(texts)) if weights is None else np.asarray(weights, dtype=np.float64)
    min_df = 2 if len(texts) >= 200 else 1
    if max_texts_per_idea is not None:
        keep, w = _keyword_sample(labels, w, max_texts_per_idea)
        if keep is not None:
            texts, labels = [texts[i] for i in keep], labels[keep]
    out = _ctfidf(texts, labels, w, k, n_keywords, _tokenizer(language), (1, 2), min_df, language)
    if any(not words for words in out):
        short = _tokenizer(language, 2)
        fallback = _ctfidf(texts, labels, w, k, n_keywords, short, (1, 1), 1, language)
        out = [words or extra for words, extra in zip(out, fallback, strict=True)]
    return out


def _keyword_sample(
    labels: np.ndarray, w: np.ndarray, cap: int
) -> tuple[np.ndarray | None, np.ndarray]:
    """Rows read for the keywords (None: all) and their weights, scaled so that each idea
    keeps its total weight. Counting the words of every text is the cost of labelling at
    scale (CountVectorizer: 37 s of 45 s for 1.2M texts); a few thousand per idea give the
    same top words (docs/bench_engine_scale.md)."""
    sizes = np.bincount(labels[labels >= 0])
    if sizes.max(initial=0) <= cap:
        return None, w
    rank = np.empty(labels.shape[0], dtype=np.int64)  # position of each row in its idea, seeded
    order = np.random.default_rng(0).permutation(labels.shape[0])
    order = order[np.argsort(labels[order], kind="stable")]
    starts = np.searchsorted(labels[order], labels[order])
    rank[order] = np.arange(order.shape[0]) - starts
    keep = np.flatnonzero((labels >= 0) & (rank < cap))
    kept_w = np.bincount(labels[keep], weights=w[keep], minlength=sizes.shape[0])
    all_w = np.bincount(labels[labels >= 0], weights=w[labels >= 0], minlength=sizes.shape[0])
    scale = all_w / np.maximum(kept_w, 1e-12)
    return keep, w[keep] * scale[labels[keep]]


def _ctfidf(
    texts, labels, w, k, n_keywords, tokenizer, ngram_range, min_df, language="fr"
) -> list[list[str]]:
    from scipy.sparse import csr_matrix
    from sklearn.feature_extraction.text import CountVectorizer

    vec = CountVectorizer(
        tokenizer=tokenizer,
        token_pattern=None,
        lowercase=False,
        ngram_range=ngram_range,
        min_df=min_df,
        dtype=np.float64,
    )
    try:
        counts = vec.fit_transform(texts)
    except ValueError:  # no word left after stop words (emoji only, numbers...)
        return [[] for _ in range(k)]
    ok = labels >= 0
    onehot = csr_matrix((w[ok], (labels[ok], np.flatnonzero(ok))), shape=(k, len(texts)))
    # Sparse throughout: ideas x vocabulary stays O(words used), where a dense array would be
    # k x V (273 ideas x ~1M unigrams and bigrams at 2M answers: GBs per copy).
    class_counts = (onehot @ counts).tocsr()
    class_counts.sum_duplicates()
    vocab = vec.get_feature_names_out()
    freq = np.asarray(class_counts.sum(axis=0)).ravel()
    avg_words = class_counts.sum() / k
    idf = np.log1p(avg_words / np.maximum(freq, 1e-12))
    row_sums = np.asarray(class_counts.sum(axis=1)).ravel()
    fold = _word_folder(vocab, language)
    out: list[list[str]] = []
    for c in range(k):
        lo, hi = class_counts.indptr[c], class_counts.indptr[c + 1]
        terms = class_counts.indices[lo:hi]
        scores = class_counts.data[lo:hi] / max(row_sums[c], 1e-12) * idf[terms]
        # Best score first, ties in vocabulary order. The forms of one word ("logiciel",
        # "logiciels"; "impôts", "impots") and the two orders of a bigram share a key: the
        # first, best-scoring form stands for them and the others are skipped.
        words: list[str] = []
        chosen: list[str] = []
        for i in np.lexsort((terms, -scores)):
            if scores[i] <= 0 or len(words) >= n_keywords:
                break
            term = str(vocab[terms[i]])
            key = " ".join(sorted(fold(word) for word in term.split()))
            # Skip another form of a chosen term, and a unigram already covered by a chosen
            # bigram or vice versa.
            if any(key == done or key in done.split() or done in key.split() for done in chosen):
                continue
            chosen.append(key)
            words.append(term)
        out.append(words)
    return out


def _word_folder(unigrams, language: str = "fr") -> Callable[[str], str]:
    """Key shared by the inflected forms of a word among `unigrams` (a vocabulary).

    Accents are ignored (8 % of Grand Débat answers write "impots"), then up to three plural
    or feminine endings of the consultation's language (`_ENDINGS`) are dropped and the
    shortest result that is itself a word of the vocabulary is the key. French:
    "logiciels" -> "logiciel", "personnelles" -> "personnel", "hôpitaux" -> "hôpital",
    "élues" -> "élu"; English: "policies" -> "policy", but no final -e ("care" is not
    "car"); German: -s, -n, -en, -e, -er ("flächen" -> "fläche", "städten" -> "städte");
    other languages: a plural -s. Data-driven rather than a stemmer: only forms the
    answers actually use are joined, and nothing is cut to a stem that is not a word
    (Snowball's French stemmer gives "don" for "données"). Homographs without accents share
    a key ("données" and the verb "donne"); the form shown is the one that scores highest
    in the idea.
    """
    endings = _ENDINGS.get(language, _ENDINGS["other"])
    known = {strip_accents(str(word)) for word in unigrams if " " not in word}
    cache: dict[str, str] = {}

    def fold(word: str) -> str:
        key = cache.get(word)
        if key is None:
            key = strip_accents(word)
            # the shortest word of the vocabulary within three endings of this one
            level = [key]
            for _ in range(3):
                level = [base for form in level for base in _shorter_forms(form, endings)]
                for base in level:
                    if base in known and len(base) < len(key):
                        key = base
            cache[word] = key
        return key

    return fold


# Plural and feminine endings a word may drop (ending, replacement), by language; "double":
# a doubled consonant + e (personnelle -> personnel, citoyenne -> citoyen).
_ENDINGS: dict[str, tuple[tuple[str, str], ...]] = {
    "fr": (("s", ""), ("x", ""), ("e", ""), ("es", ""), ("aux", "al"), ("double", "")),
    "en": (("s", ""), ("es", ""), ("ies", "y")),
    # German plurals and declensions that add letters: Flächen, Städten, Wohnungen, Gebäudes
    "de": (("s", ""), ("n", ""), ("en", ""), ("e", ""), ("er", "")),
    "other": (("s", ""),),
}


def _shorter_forms(word: str, endings: tuple[tuple[str, str], ...] = _ENDINGS["fr"]):
    """`word` without each plural or feminine ending it has, leaving at least 3 letters."""
    for ending, replacement in endings:
        if ending == "double":
            if len(word) >= 6 and word.endswith("e") and word[-2] == word[-3]:
                yield word[:-2]
        elif word.endswith(ending) and len(word) - len(ending) >= 3:
            yield word[: -len(ending)] + replacement


def label_ideas(
    texts: list[str],
    vectors: np.ndarray,
    labels: np.ndarray,
    *,
    weights: np.ndarray | None = None,
    n_keywords: int = 8,
    n_central: int = 3,
    language: str = "fr",
) -> list[Idea]:
    """Describe each idea 0..max(labels): keywords, central members, size, share.

    language: the consultation's ("fr", "en", ...), for the word forms the keywords fold.
    """
    x = _as_matrix(vectors)
    labels = np.asarray(labels, dtype=np.int64)
    if len(texts) != x.shape[0] or labels.shape[0] != x.shape[0]:
        raise ValueError("texts, vectors and labels must have the same length")
    w = np.ones(x.shape[0]) if weights is None else np.asarray(weights, dtype=np.float64)
    total = float(w.sum())
    cents = idea_centroids(x, labels, weights=w)
    keywords = top_keywords(texts, labels, weights=w, n_keywords=n_keywords, language=language)
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[order], np.arange(cents.shape[0] + 1))
    ideas = []
    for c in range(cents.shape[0]):
        members = order[bounds[c] : bounds[c + 1]]
        sims = _rows_f32(x[members], 0, members.shape[0]) @ cents[c]
        central = members[np.argsort(-sims, kind="stable")[:n_central]]
        size = float(w[members].sum())
        ideas.append(
            Idea(
                id=c,
                size=int(round(size)),
                share=size / total if total else 0.0,
                keywords=keywords[c],
                central_indices=[int(i) for i in central],
                member_indices=members,
                centroid=cents[c],
            )
        )
    return ideas


THEMES_MAX = 12  # the most themes `theme_count` picks by itself


def theme_count(n_ideas: int) -> int:
    """Themes for `n_ideas` ideas: round(sqrt(n)), from 2 to `THEMES_MAX`; 0 under 4 ideas
    (a theme of one or two ideas says nothing the ideas do not). Make.org reported "13 ideas in
    4 axes"; 68 ideas give 8 themes, 250 give 12."""
    if n_ideas < 4:
        return 0
    return int(min(THEMES_MAX, max(2, round(math.sqrt(n_ideas)))))


@fixed_threads
def find_themes(
    centroids: np.ndarray,
    sizes,
    *,
    n_themes: int | None = None,
    seed: int = 0,
    previous: np.ndarray | None = None,
) -> np.ndarray:
    """Group ideas into themes: the theme of each idea, 0.. by decreasing total size; all -1
    when there are too few ideas (`theme_count`) or `n_themes` is 0 or 1.

    previous: the centres of the themes of the run before (`theme_centres`). When there are
    as many themes now, k-means starts from them (one start): a night's new answers then move
    the themes only as far as they move the ideas, where ten fresh starts may settle on another
    cut of the same ideas.

    Size-weighted k-means (scikit-learn, 10 seeded starts) over the ideas' unit centres: a
    theme is a region of the embedding space, and a large idea pulls its theme's centre more
    than a small one. On the tuning half of the Grand Débat mixtures it matched the questions
    better than Ward, average or complete linkage over the same centres (mean ARI against the
    question 0.283 against 0.197 / 0.146 / 0.137 at sqrt(k) themes; docs/bench_engine_quality.md,
    "Themes"). Same centres, sizes and seed: same themes.
    """
    from sklearn.cluster import KMeans

    c = _as_matrix(centroids, "centroids")
    w = np.asarray(sizes, dtype=np.float64)
    k = c.shape[0]
    if w.shape != (k,) or not np.isfinite(w).all() or (w < 0).any():
        raise ValueError("sizes must be one finite, non-negative number per centroid")
    m = theme_count(k) if n_themes is None else int(n_themes)
    # identical centres (all-identical answers) cannot make more themes than there are places
    m = min(m, k, np.unique(np.asarray(c, dtype=np.float32), axis=0).shape[0])
    out = np.full(k, -1, dtype=np.int64)
    if m < 2:
        return out
    w = np.where(w > 0, w, 1e-6)  # an idea staff emptied still belongs somewhere
    x = _normalize(np.asarray(c, dtype=np.float64))
    if previous is not None and np.shape(previous) == (m, x.shape[1]):
        model = KMeans(n_clusters=m, init=_normalize(previous), n_init=1, random_state=seed)
    else:
        model = KMeans(n_clusters=m, n_init=10, random_state=seed)
    labels = model.fit_predict(x, sample_weight=w)
    # number by decreasing total size, ties by the first idea in each
    total = np.bincount(labels, weights=w, minlength=m)
    first = np.array([np.flatnonzero(labels == t).min(initial=k) for t in range(m)])
    order = [t for t in np.lexsort((first, -total)) if first[t] < k]
    new = np.full(m, -1, dtype=np.int64)
    new[order] = np.arange(len(order))
    out[:] = new[labels]
    return out


def theme_centres(centroids: np.ndarray, sizes, themes: np.ndarray) -> np.ndarray:
    """The centre of each theme 0..max(themes): the mean of its ideas' centres weighted by
    their sizes, at unit length (float32 (m, dim)); what `find_themes(previous=)` starts from."""
    c = np.asarray(centroids, dtype=np.float64)
    themes = np.asarray(themes, dtype=np.int64)
    m = int(themes.max(initial=-1)) + 1
    out = np.zeros((m, c.shape[1]))
    ok = themes >= 0
    np.add.at(out, themes[ok], c[ok] * np.asarray(sizes, dtype=np.float64)[ok, None])
    return _normalize(out)


def opening_words(
    texts: list[str], *, sample: int = 20_000, min_count: int = 10, language: str = "fr"
) -> frozenset[str]:
    """Words that open two thirds or more of the texts that use them (stop words aside): the
    verb after Make.org's "Il faut" ("interdire", "développer", "créer"). They say what a
    proposal asks for, not what it is about. Read from `sample` texts spread over the list; a
    word counts once `min_count` of them use it. (On 2,466 English Polis comments, which have
    no set opening, 8 words pass, "hope" and "think" among them; half instead of two thirds, or
    5 uses, let topical words through: "labour", "land", "universal".)"""
    from collections import Counter

    step = max(1, len(texts) // sample)
    tokenize = _tokenizer(language)
    first: Counter[str] = Counter()
    used: Counter[str] = Counter()
    for text in texts[::step]:
        words = tokenize(str(text))
        if words:
            first[words[0]] += 1
            used.update(set(words))
    return frozenset(w for w, n in first.items() if used[w] >= min_count and 3 * n >= 2 * used[w])


def theme_names(keywords: list[list[str]], texts: list[str], language: str = "fr") -> list[str]:
    """A name per theme: its first three keywords that are not `opening_words` of the texts
    ("animaux, élevage, chasse" rather than "interdire, animaux, arrêter"); its first three
    keywords when too few are left."""
    openers = opening_words(texts, language=language)
    names = []
    for words in keywords:
        topical = [w for w in words if not openers.intersection(w.split())]
        names.append(", ".join((topical if len(topical) >= 3 else words)[:3]))
    return names


# ---------------------------------------------------------------------------
# Whole pipeline
# ---------------------------------------------------------------------------


@dataclass
class IdeasResult:
    """Output of `find_ideas`. Row indices refer to the input texts/vectors."""

    labels: np.ndarray  # (n,) idea id per input row, -1 = noise
    ideas: list[Idea]  # ids 0..k-1, largest first; indices are input rows
    centroids: np.ndarray  # (k, dim) float32, L2-normalised: store for `assign_to_ideas`
    dedup: DedupResult
    n_noise: int
    params: ClusterParams


def find_ideas(
    texts: list[str],
    vectors: np.ndarray,
    *,
    params: ClusterParams | None = None,
    near_threshold: float | None = 0.95,
    n_keywords: int = 8,
) -> IdeasResult:
    """Dedupe, cluster and label. `vectors[i]` is the embedding of `texts[i]`.

    Raises ValueError when texts and vectors disagree in length or vectors are
    not a 2-D float array. An empty input gives no ideas.
    """
    params = params or ClusterParams()
    texts = list(texts)
    x = _as_matrix(vectors)
    if x.shape[0] != len(texts):
        raise ValueError(f"{len(texts)} texts but {x.shape[0]} vectors")
    dd = dedupe(texts, x, near_threshold=near_threshold, seed=params.seed)
    reps = dd.representatives
    rep_x = x[reps]
    rep_texts = [texts[i] for i in reps]
    rep_labels = cluster_vectors(rep_x, weights=dd.counts, params=params, texts=rep_texts)
    labels = rep_labels[dd.group_of] if reps.size else np.zeros(0, dtype=np.int64)
    ideas = label_ideas(rep_texts, rep_x, rep_labels, weights=dd.counts, n_keywords=n_keywords)
    for idea in ideas:  # back to input row numbers
        idea.central_indices = [int(reps[i]) for i in idea.central_indices]
        idea.member_indices = np.flatnonzero(labels == idea.id)
    cents = (
        np.stack([i.centroid for i in ideas]) if ideas else np.zeros((0, x.shape[1]), np.float32)
    )
    return IdeasResult(
        labels=labels,
        ideas=ideas,
        centroids=cents,
        dedup=dd,
        n_noise=int(np.count_nonzero(labels < 0)),
        params=params,
    )


# ---------------------------------------------------------------------------
# (d) Incremental assignment, (e) nearest neighbours
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Assignment:
    labels: np.ndarray  # (n,) idea index, -1 when no centroid reaches the threshold
    similarities: np.ndarray  # (n,) cosine to the nearest centroid (float32)


def assign_to_ideas(
    vectors: np.ndarray, centroids: np.ndarray, threshold: float = 0.5
) -> Assignment:
    """Nearest idea for each new vector, or -1 when its cosine is under `threshold`."""
    x = _as_matrix(vectors)
    c = _as_matrix(centroids, "centroids")
    n = x.shape[0]
    if c.shape[0] == 0 or n == 0:
        return Assignment(np.full(n, -1, dtype=np.int64), np.zeros(n, dtype=np.float32))
    if c.shape[1] != x.shape[1]:
        raise ValueError(f"vectors have dim {x.shape[1]} but centroids {c.shape[1]}")
    c = _normalize(c)
    labels = np.empty(n, dtype=np.int64)
    sims = np.empty(n, dtype=np.float32)
    step = _block_rows(c.shape[0])
    for lo in range(0, n, step):
        s = _normalize(_rows_f32(x, lo, lo + step)) @ c.T
        best = s.argmax(axis=1)
        labels[lo : lo + step] = best
        sims[lo : lo + step] = s[np.arange(s.shape[0]), best]
    labels[sims < threshold] = -1
    return Assignment(labels, sims)


@dataclass(frozen=True)
class Neighbors:
    indices: np.ndarray  # (k,) rows of the stored vectors, most similar first
    similarities: np.ndarray  # (k,) cosine, float32


def nearest_neighbors(
    query: np.ndarray,
    vectors: np.ndarray,
    k: int = 5,
    *,
    min_similarity: float | None = None,
    exclude: np.ndarray | list[int] | None = None,
) -> Neighbors:
    """Top-k stored rows by cosine to one query vector (exact, blocked; float16 storage is fine).

    Brute force: 2 M x 512 float16 is ~2 GB read per query, well under a second
    per 100k rows; for typing-time suggestions over millions, restrict `vectors`
    to the consultation or an idea first.
    """
    q = np.asarray(query, dtype=np.float32).reshape(-1)
    x = _as_matrix(vectors)
    if x.shape[0] and q.shape[0] != x.shape[1]:
        raise ValueError(f"query has dim {q.shape[0]} but vectors {x.shape[1]}")
    if k < 1:
        raise ValueError("k must be >= 1")
    qn = float(np.linalg.norm(q))
    if qn == 0 or x.shape[0] == 0:
        return Neighbors(np.zeros(0, np.int64), np.zeros(0, np.float32))
    q = q / qn
    sims = np.empty(x.shape[0], dtype=np.float32)
    step = 200_000
    for lo in range(0, x.shape[0], step):
        sims[lo : lo + step] = _rows_f32(x, lo, lo + step) @ q
    if exclude is not None:
        sims[np.asarray(exclude, dtype=np.int64)] = -np.inf
    kk = min(k, sims.shape[0])
    top = np.argpartition(-sims, kk - 1)[:kk]
    top = top[np.lexsort((top, -sims[top]))]
    keep = np.isfinite(sims[top])
    if min_similarity is not None:
        keep &= sims[top] >= min_similarity
    top = top[keep]
    return Neighbors(top.astype(np.int64), sims[top])
