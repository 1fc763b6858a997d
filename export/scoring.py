"""Scoring with trained PyTorch modules: user vectors, the full-catalog blend, the MLP head on the
top items, LLM profile blending and the zero-shot reference. Used by training, distillation, A/B
replay, export (quality rows) and ``genre recommend --model``."""
from __future__ import annotations

import numpy as np

from .train_config import Config


def pad(seqs: list[np.ndarray], cap: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Right-aligned-to-left padding of the most recent ``cap`` items of each sequence."""
    seqs = [s[-cap:] if cap else s for s in seqs]
    L = max(1, max((len(s) for s in seqs), default=1))
    ids = np.zeros((len(seqs), L), np.int64)
    m = np.zeros((len(seqs), L), np.float32)
    for r, s in enumerate(seqs):
        ids[r, : len(s)] = s
        m[r, : len(s)] = 1
    return ids, m


def user_vectors(rec, E, hists: list[np.ndarray], users: np.ndarray, profiles, user_conf):
    """The user model over the newest ``user_conf.max_history`` items of each history in ``hists`` (rows of the
    item embeddings ``E``), blended with the interest profile where ``profiles`` holds one. One function for
    training, validation loss and evaluation, so the user vector they see is the same; gradients follow the
    caller's grad mode."""
    import torch

    dev = E.device
    ids, m = pad(hists, user_conf.max_history)
    u, _ = rec.user(E[torch.as_tensor(ids, device=dev)], torch.as_tensor(m, device=dev))
    if profiles is not None:  # the interest profile as a standing instruction (no gradient through it)
        u = blend_profile(u, users, profiles, user_conf.profile_weight)
    return u


class Scorer:
    """Full-catalog scoring with trained modules: blend for all items, MLP head on the top ones. Runs where
    ``rec`` lives (CPU, or the training GPU); the scores come back as numpy."""

    def __init__(self, conf: Config, rec, emb, hist: list[np.ndarray], profiles=None, pop_rows=None):
        import torch

        self.torch = torch
        self.conf, self.rec, self.hist = conf, rec, hist
        self.dev = rec.pop.device
        self.E = torch.as_tensor(emb, device=self.dev)
        self.profiles = profiles  # (P [n_users, D], has [n_users] bool) from Trainer.profile_vectors, or None
        self.pop_rows = pop_rows  # users -> [B, N] trending popularity (popularity_rows), or None: static

    def user_vectors(self, users):
        with self.torch.no_grad():
            return user_vectors(self.rec, self.E, [self.hist[u] for u in users], users, self.profiles,
                                self.conf.user_model)

    def __call__(self, users: np.ndarray) -> np.ndarray:
        torch = self.torch
        with torch.no_grad():
            u = self.user_vectors(users)
            cids, cm = pad([self.hist[x] for x in users])
            cf = self.rec.cf.scores(torch.as_tensor(cids, device=self.dev), torch.as_tensor(cm, device=self.dev), None)
            pop = (self.rec.pop.expand(len(users), -1) if self.pop_rows is None
                   else torch.as_tensor(self.pop_rows(users), device=self.dev))
            s = self.rec.head.blend(u @ self.E.T, cf, pop)
            if self.conf.head.kind == "mlp":
                k = min(self.conf.head.rerank_top, s.shape[1])
                top = torch.topk(s, k, dim=1).indices
                fine = self.rec.head(u, self.E[top], torch.gather(cf, 1, top), torch.gather(pop, 1, top))
                # keep re-ranked items above the rest, in their MLP order
                out = s - (s.max() - s.min() + 1e3)
                out.scatter_(1, top, fine - fine.min() + 1.0 + out.max())
                s = out
        return s.cpu().numpy()


def popularity_rows(rec, split, when: np.ndarray):
    """The trending popularity rows ``rec`` was calibrated with (``rec.pop_half_life`` > 0), as of the per-user
    request times ``when`` (``Split.request_times``); None for static popularity."""
    from .trend import trending_rows

    hl = float(rec.pop_half_life)
    return trending_rows(split, when, hl) if hl > 0 else None


def mean_by_owner(e, owner: np.ndarray, n_users: int):
    """(P [n_users, D] = mean of each user's rows of ``e``, has [n_users]) for per-user LLM text embeddings."""
    import torch

    P = torch.zeros(n_users, e.shape[1], device=e.device)
    if len(owner):
        P.index_add_(0, torch.as_tensor(owner, device=e.device), e)
    counts = np.bincount(owner, minlength=n_users)
    P = P / torch.as_tensor(np.maximum(counts, 1), dtype=P.dtype, device=e.device)[:, None]
    return P, counts > 0


def blend_profile(u, users, profiles, w: float):
    """User vectors with the user's interest profile blended in (users without one are unchanged)."""
    import torch

    P, has = profiles
    idx = torch.as_tensor(np.asarray(users, np.int64), device=u.device)
    h = torch.as_tensor(has, device=u.device)[idx][:, None]
    return torch.where(h, (1 - w) * u + w * P.to(u.device)[idx], u)


def zero_shot_scores(emb: np.ndarray, hist: list[np.ndarray], max_history: int):
    """Zero-shot: pretrained encoder, mean of history, dot product, no training."""
    def score(users):
        out = np.zeros((len(users), emb.shape[0]), np.float32)
        for r, u in enumerate(users):
            h = hist[u][-max_history:]
            if len(h):
                out[r] = emb @ emb[h].mean(0)
        return out
    return score
