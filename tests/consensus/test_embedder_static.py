"""The `static` embedder: distilled offline from the packaged MiniLM, then fast and plain."""

from __future__ import annotations

import numpy as np
import pytest
from django.core.management import CommandError, call_command

from consensus.engine.embedders import StaticEmbedder, _build, build_static_model


@pytest.fixture(scope="module")
def static_dir(tmp_path_factory):
    target = tmp_path_factory.mktemp("models") / "static"
    StaticEmbedder(target).encode(["warm up"])  # builds it on first use (~20 s)
    return target


def test_static_embedder_is_built_on_first_use_and_encodes_english(static_dir):
    assert (static_dir / "modules.json").exists()
    emb = StaticEmbedder(static_dir)
    texts = [
        "Lower taxes for small businesses",
        "Reduce taxes on small companies",
        "Plant more trees in cities",
    ]
    x = emb.encode(texts)
    assert x.shape == (3, 256) and emb.dim == 256 and emb.name == "static"
    assert np.allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    assert x[0] @ x[1] > x[0] @ x[2] + 0.3  # the paraphrase is much closer
    again = StaticEmbedder(static_dir).encode(texts)
    assert np.array_equal(x, again)


def test_static_embedder_survives_odd_text(static_dir):
    x = StaticEmbedder(static_dir).encode(["", "   ", "🙂🙂", "x" * 5000, "Il faut des vélos"])
    assert x.shape == (5, 256) and np.isfinite(x).all()
    assert StaticEmbedder(static_dir).encode([]).shape == (0, 256)


def test_static_distillation_is_deterministic(tmp_path):
    # The first 2,100 token ids of MiniLM's vocabulary hold single characters and the
    # commonest words ("the" is 1996), enough to compare two builds quickly.
    a = build_static_model(tmp_path / "a", limit=2100)
    b = build_static_model(tmp_path / "b", limit=2100)
    texts = ["the and of", "a b c"]
    xa, xb = StaticEmbedder(a).encode(texts), StaticEmbedder(b).encode(texts)
    assert np.allclose(np.linalg.norm(xa, axis=1), 1.0, atol=1e-5)  # distilled, not zero rows
    assert np.array_equal(xa, xb)


def test_build_command_keeps_a_built_model_and_refuses_a_file(static_dir, tmp_path):
    from io import StringIO

    out = StringIO()
    call_command("embedder_build_static", "--dir", str(static_dir), stdout=out)
    assert "Already built" in out.getvalue()
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    with pytest.raises(CommandError, match="not a folder"):
        call_command("embedder_build_static", "--dir", str(not_a_folder), "--force")


def test_static_is_a_known_backend(monkeypatch, tmp_path):
    monkeypatch.setenv("CONCORDE_STATIC_MODEL_DIR", str(tmp_path / "m"))
    emb = _build("static")
    assert isinstance(emb, StaticEmbedder) and emb.path == tmp_path / "m"
