"""Benchmark cold-start items: do never-seen items reach the candidate lists through their titles alone?

On the planted catalogue of ``datatools/coldstart.py`` (themes whose cold items share no word, and no category,
with the warm items of their theme; every held-out target is a cold item with no training event; cold items of
themes no user follows fill the catalogue) it trains the attention model twice with the same seed and budget,
with the title vectors of the pretrained sentence encoder (``jobs/item_text.py``, offline) and without them, and
ranks the full catalogue for every holdout user beside popularity, the transition kNN and ALS. It prints, for
each, the share of users whose held-out cold item is in their top 10, top 50 and top K (the candidate list,
``ATTNREC_TOP_K``), and the seconds the encoder and each training took.

Run: ``python benchmarks/cold_items.py [--users 400] [--warm 20] [--cold 8] [--distractors 15] [--history 8]
[--epochs 12]
[--threads 1] [--seed 0]``
"""

from __future__ import annotations

import argparse
import os
import time


def measure(
    n_users: int,
    warm: int,
    cold: int,
    history: int,
    epochs: int,
    seed: int,
    distractors: int = 20,
    baselines: bool = True,
) -> dict[str, dict[str, float]]:
    """{scorer: {"hr_at_10", "hr_at_50", "hr_at_K", "n_users", "seconds"}} on the planted catalogue."""
    import torch

    from attnrec.settings import get_settings
    from datatools.coldstart import planted_catalogue
    from jobs.item_text import embed
    from models.baselines import TransitionKNN, evaluate_knn, evaluate_mf, evaluate_popularity, tune_mf
    from models.config import build_model, train_config
    from models.dataset import TrainingSet, leave_one_out, positive_counts
    from models.encoding import Events
    from models.evaluate import evaluate_recommender
    from models.fit import fit
    from models.recommender import Recommender
    from models.vocab import ItemVocab

    settings = get_settings()
    top_k = settings.top_k
    planted = planted_catalogue(n_users, warm, cold, history, seed=seed, distractors_per_theme=distractors)
    vocab = ItemVocab.from_items(planted.items)
    users = [
        Events(u, seq, ["rate"] * len(seq), [60_000 * (j + 1) for j in range(len(seq))], [None] * len(seq))
        for u, seq in planted.sequences.items()
    ]
    split = leave_one_out(users, vocab)
    counts = positive_counts(split.train, vocab)
    assert all(h.target in planted.cold and counts[vocab.index[h.target]] == 0 for h in split.test)

    def hits(evaluate, seconds: float) -> dict[str, float]:
        """HR@10, HR@50 and HR@K (the candidate list) of ``evaluate(holdout, k)`` on the test holdout."""
        at_k = evaluate(split.test, top_k)
        return {
            "hr_at_10": evaluate(split.test, 10)["hr_at_10"],
            "hr_at_50": at_k["recall_at_50"],  # one target per user: recall@50 is HR@50
            f"hr_at_{top_k}": at_k[f"hr_at_{top_k}"],
            "n_users": at_k["n_users"],
            "seconds": seconds,
        }

    t0 = time.monotonic()
    vectors = embed([r["title"] for r in planted.items], settings.item_text_batch_size)
    text = torch.cat([torch.zeros(1, vectors.shape[1]), torch.from_numpy(vectors)])  # (N+1, D), row 0 padding
    embed_seconds = time.monotonic() - t0

    tcfg = train_config(settings, [f"epochs={epochs}", f"seed={seed}", f"max_seq_len={history + 2}"])
    examples = TrainingSet(split.train, tcfg.max_seq_len, tcfg.positive_types)
    out = {}
    for name, item_text in (("attention + item text", text), ("attention, no text", None)):
        torch.manual_seed(seed)
        rec = Recommender(build_model(vocab, tcfg, item_text=item_text), vocab, {}, counts)
        rec.model.items.set_warm(counts > 0)
        t1 = time.monotonic()
        fit(rec, examples, split.valid, tcfg, device=torch.device("cpu"))
        out[name] = hits(lambda h, k, rec=rec: evaluate_recommender(rec, h, k=k), time.monotonic() - t1)
    out["attention + item text"]["embed_seconds"] = embed_seconds
    if baselines:
        t1 = time.monotonic()
        out["popularity"] = hits(lambda h, k: evaluate_popularity(counts, vocab, h, k), 0.0)
        knn = TransitionKNN.fit(split.train, vocab, counts)
        out["transition kNN"] = hits(lambda h, k: evaluate_knn(knn, h, k), 0.0)
        mf, _ = tune_mf(split.train, vocab, counts, split.valid, tcfg.positive_types, seed=seed)
        out["ALS (MF)"] = hits(lambda h, k: evaluate_mf(mf, h, k), time.monotonic() - t1)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--users", type=int, default=400)
    p.add_argument("--warm", type=int, default=20, help="warm items per theme")
    p.add_argument("--cold", type=int, default=8, help="cold items per theme")
    p.add_argument("--distractors", type=int, default=15, help="cold items of each theme no user follows")
    p.add_argument("--history", type=int, default=8, help="warm items per user before the two cold ones")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    import torch

    torch.set_num_threads(a.threads)
    t0 = time.monotonic()
    out = measure(a.users, a.warm, a.cold, a.history, a.epochs, a.seed, a.distractors)
    top_k = next(k for k in next(iter(out.values())) if k.startswith("hr_at_") and k not in ("hr_at_10", "hr_at_50"))
    print(
        f"planted catalogue: {a.users} users, 8 themes x ({a.warm} warm + {a.cold} cold items) + 8 x {a.distractors} "
        f"cold items of themes no one follows; every test target is a cold item with no training event; load "
        f"{os.getloadavg()[0]:.1f}"
    )
    print(f"  {'':<24}{'hr_at_10':>10}{'hr_at_50':>10}{top_k:>11}{'seconds':>10}")
    for name, m in out.items():
        print(f"  {name:<24}{m['hr_at_10']:>10.4f}{m['hr_at_50']:>10.4f}{m[top_k]:>11.4f}{m['seconds']:>10.1f}")
    embed_s = out["attention + item text"]["embed_seconds"]
    print(f"title embedding: {embed_s:.1f} s; total {time.monotonic() - t0:.0f} s")


if __name__ == "__main__":
    main()
