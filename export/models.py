"""PyTorch modules of the teacher: item tower, user models, scoring heads, CF part.

Imported only by export-side functions (torch is an export dependency).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

NEG = -1e9  # finite "minus infinity": keeps softmax/ONNX free of NaN on fully masked rows


# ------------------------------------------------------------------------- item tower
def load_hf_encoder(path: str | Path):
    """Load a local Hugging Face encoder with eager attention (exports cleanly to ONNX)."""
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(path), attn_implementation="eager", local_files_only=True)
    model.eval()
    return model


def pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    if pooling == "cls":
        return hidden[:, 0]
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)


def by_length(fn, ids, mask, device=None, batch: int = 256, grad: bool = False, lengths: np.ndarray | None = None,
              pad_to: int | None = None) -> torch.Tensor:
    """``fn(ids, mask)`` (e.g. a tower: token ids + mask -> one row per text) over many texts, in batches of texts
    of similar length, each batch cut to its longest text; the rows come back in the input's order. Without
    gradients unless ``grad`` (a training step's forward pass, split the same way).

    ``ids`` may be any array indexed as ``ids[rows, :L]`` (token ids, or cached hidden states [N, T, D] for the
    top layers of a fine-tuned tower); ``lengths`` gives each row's token count where ``mask`` is a tensor on
    another device. ``pad_to``: ``fn`` returns a row per token ([n, L, ...]) and each batch's rows are padded
    with zeros to that width, so the batches stack (a cache of hidden states; padded tokens are masked out
    wherever they are read).

    Why: ``tokenize`` pads every text to the longest of them all (32 tokens for ml-100k's item texts, half of
    them 15 or fewer; request texts average 9), and a transformer's cost grows with the padded length: the
    distillation targets (6,700 texts) took 52 s of the quick preset's demo here padded, 13 s so. Padding is masked
    out of attention and pooling, so each row is what the text gives alone, up to float rounding."""
    n = len(ids)
    lengths = np.asarray(mask).sum(1) if lengths is None else np.asarray(lengths)
    order = np.argsort(-lengths, kind="stable")  # longest first: the first batch shows the peak memory at once
    parts = []
    with torch.set_grad_enabled(grad):
        for a in range(0, n, batch):
            rows = order[a: a + batch]
            L = max(1, int(lengths[rows[0]]))
            out = fn(torch.as_tensor(ids[rows, :L], device=device), torch.as_tensor(mask[rows, :L], device=device))
            if pad_to is not None and out.shape[1] < pad_to:
                out = F.pad(out, (0, 0) * (out.dim() - 2) + (0, pad_to - out.shape[1]))
            parts.append(out)
    if not parts:
        raise ValueError("by_length: no texts to encode")
    out = torch.cat(parts)
    return out[torch.as_tensor(np.argsort(order, kind="stable"), device=out.device)]


class ItemTower(nn.Module):
    """Transformer encoder + pooling + residual adapter + L2 norm.

    The lower layers can be frozen and their outputs cached once (``bottom``), so each training
    step only runs the top ``n_top`` layers on the items it needs.
    """

    def __init__(self, hf_model, pooling: str = "mean", n_top: int = 1, adapter: bool = True):
        super().__init__()
        self.bert = hf_model
        self.pooling = pooling
        layers = self.bert.encoder.layer
        self.n_top = min(n_top, len(layers))
        for p in self.bert.parameters():
            p.requires_grad_(False)
        for layer in layers[len(layers) - self.n_top :]:
            for p in layer.parameters():
                p.requires_grad_(True)
        d = self.bert.config.hidden_size
        # Residual adapter, zero-initialised: starts as the pretrained embedding space.
        self.adapter = nn.Linear(d, d)
        nn.init.zeros_(self.adapter.weight)
        nn.init.zeros_(self.adapter.bias)
        self.adapter.requires_grad_(adapter)

    @property
    def dim(self) -> int:
        return self.bert.config.hidden_size

    def _ext_mask(self, mask: torch.Tensor) -> torch.Tensor:
        return (1.0 - mask[:, None, None, :].float()) * torch.finfo(torch.float32).min

    @torch.no_grad()
    def bottom(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Hidden states after the frozen layers."""
        h = self.bert.embeddings(input_ids=ids, token_type_ids=torch.zeros_like(ids))
        ext = self._ext_mask(mask)
        layers = self.bert.encoder.layer
        for layer in layers[: len(layers) - self.n_top]:
            h = layer(h, attention_mask=ext)[0]
        return h

    def top(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        ext = self._ext_mask(mask)
        layers = self.bert.encoder.layer
        for layer in layers[len(layers) - self.n_top :]:
            h = layer(h, attention_mask=ext)[0]
        return self.head(pool(h, mask, self.pooling))

    def head(self, pooled: torch.Tensor) -> torch.Tensor:
        return F.normalize(pooled + self.adapter(pooled), dim=-1)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Full graph: token ids + mask -> L2-normalised item embedding (what gets exported)."""
        out = self.bert(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids))
        return self.head(pool(out.last_hidden_state, mask, self.pooling))


# ------------------------------------------------------------------------- user models
def _safe(mask: torch.Tensor) -> torch.Tensor:
    """Mask with slot 0 switched on for empty histories (their vectors are zero anyway)."""
    m = mask.clone()
    m[:, 0] = torch.where(mask.sum(1) > 0, mask[:, 0], torch.ones_like(mask[:, 0]))
    return m


class AdditiveAttention(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.proj = nn.Linear(dim, hidden)
        self.query = nn.Parameter(torch.randn(hidden) * 0.02)

    def forward(self, h, mask):
        logits = torch.tanh(self.proj(h)) @ self.query
        logits = logits.masked_fill(mask <= 0, NEG)
        a = torch.softmax(logits, dim=-1) * (mask > 0).to(h.dtype)
        return (a.unsqueeze(-1) * h).sum(1), a


class MeanUser(nn.Module):
    """Mean of the history embeddings (no parameters)."""

    def __init__(self, dim: int, **_):
        super().__init__()
        self.dim = dim

    def forward(self, h, mask):
        m = mask.to(h.dtype)
        w = m / m.sum(1, keepdim=True).clamp(min=1.0)
        return (w.unsqueeze(-1) * h).sum(1), w


class AttentionUser(nn.Module):
    """Additive attention over the history (NAML-style)."""

    def __init__(self, dim: int, hidden: int = 128, **_):
        super().__init__()
        self.att = AdditiveAttention(dim, hidden)

    def forward(self, h, mask):
        return self.att(h, mask)


def self_attention(qkv: torch.Tensor, mask: torch.Tensor, heads: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Multi-head attention of a history over itself: ``qkv`` [B, H, 3D] (one projection), ``mask`` [B, H]
    (at least one slot on: see _safe) -> (context [B, H, D], attention [B, heads, H, H]); masked slots get no
    attention."""
    B, H, D3 = qkv.shape
    D = D3 // 3
    q, k, v = qkv.view(B, H, 3, heads, D // heads).permute(2, 0, 3, 1, 4)
    logits = (q @ k.transpose(-1, -2)) / math.sqrt(D // heads)
    att = torch.softmax(logits.masked_fill(mask[:, None, None, :] <= 0, NEG), -1)
    return (att @ v).transpose(1, 2).reshape(B, H, D), att


class NRMSUser(nn.Module):
    """Multi-head self-attention over the history, then additive attention (NRMS)."""

    def __init__(self, dim: int, heads: int = 4, hidden: int = 128, **_):
        super().__init__()
        if dim % heads:
            raise ValueError(f"user_model.heads ({heads}) must divide the embedding size ({dim})")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.att = AdditiveAttention(dim, hidden)

    def forward(self, h, mask):
        ctx, _ = self_attention(self.qkv(h), _safe(mask), self.heads)
        h2 = h + self.out(ctx)  # residual: starts as the plain history
        return self.att(h2, mask)


class SASRecUser(nn.Module):
    """Sequential user model (SASRec-style): a recency-position embedding added to each history item, one
    pre-norm self-attention + feed-forward block, and the most recent item's output as the user vector.

    Why: the held-out events of a temporal split are each user's *next* ones; the order of a history and
    what was watched last say more about them than a bag of items does. Trained with
    ``train.example_history = "before"`` (next-item examples). The explanation weights are the last item's
    attention over the history (mean over heads). Output and feed-forward projections start at zero, so an
    untrained model returns the last item's embedding (plus its position vector).
    """

    def __init__(self, dim: int, heads: int = 4, hidden: int = 128, max_history: int = 50, **_):
        super().__init__()
        if dim % heads:
            raise ValueError(f"user_model.heads ({heads}) must divide the embedding size ({dim})")
        self.heads, self.max_history = heads, max_history
        self.pos = nn.Embedding(max_history, dim)
        nn.init.normal_(self.pos.weight, std=0.01)
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.ff = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        for lin in (self.out, self.ff[2]):
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)

    def forward(self, h, mask):
        H = h.shape[1]
        m = _safe(mask)
        n = m.sum(1, keepdim=True)  # history length (>= 1 after _safe)
        slot = torch.arange(H, device=h.device, dtype=m.dtype)[None, :]
        from_end = (n - 1 - slot).clamp(0, self.max_history - 1).long()
        x = h + self.pos(from_end) * (m > 0).unsqueeze(-1).to(h.dtype)
        ctx, att = self_attention(self.qkv(self.ln1(x)), m, self.heads)
        x = x + self.out(ctx)
        x = x + self.ff(self.ln2(x))
        last = (slot == (n - 1)).to(h.dtype)  # one-hot of the most recent slot: a gather ONNX exports plainly
        u = (last.unsqueeze(-1) * x).sum(1)
        w = (last[:, None, :, None] * att).sum(2).mean(1) * (mask > 0).to(h.dtype)
        return u * (mask.sum(1, keepdim=True) > 0).to(h.dtype), w


# ------------------------------------------------------------------------- heads
class DotHead(nn.Module):
    """score = a * <u, e> + b * cf + c * pop + d: the content/CF blend is learned here."""

    def __init__(self, dim: int, **_):
        super().__init__()
        self.log_a = nn.Parameter(torch.tensor(math.log(10.0)))
        self.b = nn.Parameter(torch.tensor(1.0))
        self.c = nn.Parameter(torch.tensor(0.0))

    def blend_weights(self) -> dict:
        return {"content": float(self.log_a.detach().exp()), "cf": float(self.b.detach()), "pop": float(self.c.detach())}

    def blend(self, dot, cf, pop):
        return self.log_a.exp() * dot + self.b * cf + self.c * pop

    def forward(self, u, e, cf, pop):
        """u [B, D], e [B, C, D], cf [B, C], pop [B, C] -> scores [B, C]."""
        dot = torch.einsum("bd,bcd->bc", u, e)
        return self.blend(dot, cf, pop)

    def score_rows(self, u, rows, inv, cf, pop, shared: slice):
        """As ``forward(u, rows[inv], cf, pop)``, without building ``rows[inv]`` [B, C, D]: the columns in
        ``shared`` hold the same row for every example (a batch's shared negatives) and take one [B, D] x
        [D, K] product; the others are gathered per example. Why: at batch 4096 with 128 shared negatives
        the gathered tensor is 0.8 GB, and its backward (a scatter-add into ``rows``) was ~60% of a
        training step on a large log (py-spy)."""
        # which columns are shared is known from the shapes: index lists made on the host, so no boolean-mask
        # indexing (a device-to-host sync on a GPU) in the step
        every = range(inv.shape[1])
        sh = set(every[shared])
        cols_sh = torch.tensor(every[shared], dtype=torch.long, device=u.device)
        own = [c for c in every if c not in sh]
        # the products' dtype, not u's: under bf16 autocast they come out bf16 while u is fp32, and index_copy
        # wants one dtype (a bf16 run on an H200 stopped there)
        prod = u @ rows[inv[0, shared]].T
        dot = torch.empty(inv.shape, dtype=prod.dtype, device=u.device).index_copy(1, cols_sh, prod)
        if own:
            cols_own = torch.tensor(own, dtype=torch.long, device=u.device)
            own_dot = torch.einsum("bd,bcd->bc", u, rows[inv[:, cols_own]])
            dot = dot.index_copy(1, cols_own, own_dot.to(dot.dtype))
        return self.blend(dot, cf, pop)


class MLPHead(DotHead):
    """The dot blend plus a small MLP over [u, e, u*e, cf, pop] (re-scores the top candidates)."""

    def __init__(self, dim: int, hidden: int = 64, **_):
        super().__init__(dim)
        self.mlp = nn.Sequential(nn.Linear(3 * dim + 2, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        nn.init.zeros_(self.mlp[2].weight)
        nn.init.zeros_(self.mlp[2].bias)

    def score_rows(self, u, rows, inv, cf, pop, shared: slice):
        """The MLP reads every candidate's embedding: gathered as ``forward`` takes them."""
        return self.forward(u, rows[inv], cf, pop)

    def forward(self, u, e, cf, pop):
        base = super().forward(u, e, cf, pop)
        ub = u.unsqueeze(1).expand_as(e)
        x = torch.cat([ub, e, ub * e, cf.unsqueeze(-1), pop.unsqueeze(-1)], -1)
        return base + self.mlp(x).squeeze(-1)


# ------------------------------------------------------------------------- CF part
class CFPart(nn.Module):
    """Collaborative score of candidates given a history.

    ``cooccurrence``/``ease``: a fixed neighbour table W (top-N per item), cf = sum_i W[i, j].
    ``mf``: item factors P, Q learned jointly; cf = mean(P[hist]) . Q[j]. Both need only the
    history, so they work for users the device has never seen.
    A neighbour part may hold more tables for short histories (:meth:`set_short`).
    """

    def __init__(self, kind: str, n_items: int, table: tuple[np.ndarray, np.ndarray] | None = None, mf_dim: int = 64,
                 recency_floor: float = 0.5):
        super().__init__()
        self.kind = kind
        self.n_items = n_items
        # [half_life (items; 0 = off), floor]: a buffer so it travels in recommender.safetensors
        self.register_buffer("recency", torch.tensor([0.0, recency_floor]))
        if kind in ("cooccurrence", "ease"):
            idx, w = table
            self.register_buffer("W", self._sparse(idx, w))
        elif kind == "mf":
            self.P = nn.Embedding(n_items, mf_dim)
            self.Q = nn.Embedding(n_items, mf_dim)
            nn.init.normal_(self.P.weight, std=0.05)
            nn.init.zeros_(self.Q.weight)  # unseen items start at cf = 0
        # [(longest history served, its votes_by_item)], ascending: plain attributes, not buffers (they travel as
        # their own files, model_folder.py); set_short puts them on W's device
        self.short: list[tuple[int, torch.Tensor]] = []
        self._votes = None  # votes_by_item(W), built at the first vote on W's device

    @staticmethod
    def votes_by_item(S: torch.Tensor) -> torch.Tensor:
        """A neighbour table's transpose in compressed rows (CSR; row j: who votes for item j), the layout whose
        product with the dense vote matrix is fast: a training step's CF vote took 200 ms here with the COO
        table and takes 23 ms with this one (torch's COO product runs one thread; the CSR product is MKL's on a
        CPU, cuSPARSE's on a GPU). Each output row sums its own entries, so the result does not depend on the
        thread count."""
        import warnings

        with warnings.catch_warnings():  # "Sparse CSR tensor support is in beta state", once per process
            warnings.simplefilter("ignore", UserWarning)
            return S.t().coalesce().to_sparse_csr()

    def _sparse(self, idx: np.ndarray, w: np.ndarray) -> torch.Tensor:
        """The [n_items, n_items] sparse matrix of a neighbour table (row i: what item i votes for)."""
        rows = np.repeat(np.arange(idx.shape[0]), idx.shape[1])
        keep = w.reshape(-1) != 0
        i = torch.tensor(np.stack([rows[keep], idx.reshape(-1)[keep]]), dtype=torch.long)
        return torch.sparse_coo_tensor(i, torch.tensor(w.reshape(-1)[keep], dtype=torch.float32),
                                       (self.n_items, self.n_items), check_invariants=True).coalesce()

    def set_short(self, tiers: list[tuple[int, tuple[np.ndarray, np.ndarray]]] | None) -> None:
        """Short-history tables ``[(T, (indices, weights)), ...]`` (T ascending, each blend scale folded into its
        weights): a history of n items reads the first table with n <= T instead of the main one (longer ones, and
        every history with ``None`` or ``[]``, read the main table)."""
        tiers = list(tiers or [])
        if tiers and self.kind not in ("cooccurrence", "ease"):
            raise ValueError(f"short-history CF tables need a neighbour CF part, not {self.kind!r}")
        ts = [int(t) for t, _ in tiers]
        if any(t < 1 for t in ts) or ts != sorted(set(ts)):
            raise ValueError(f"short-history tables must serve ascending history lengths >= 1, got {ts}")
        self.short = [(int(t), self.votes_by_item(self._sparse(*tab).to(self.W.device))) for t, tab in tiers]

    def _apply(self, fn, *args, **kwargs):  # .to(device) / .cpu() move the short-history tables too
        out = super()._apply(fn, *args, **kwargs)
        self.short = [(t, fn(W)) for t, W in self.short]
        self._votes = None  # rebuilt from W where it now lives
        return out

    def history_weights(self, hmask: torch.Tensor) -> torch.Tensor:
        """Vote of each (left-aligned, oldest-first) history slot: recent items count more."""
        m = hmask.float()
        # read as tensors, not Python numbers: no device-to-host copy per step on a GPU (half-life 0 = off)
        hl, floor = self.recency[0], self.recency[1]
        on = hl > 0
        n = m.sum(1, keepdim=True)
        from_end = (n - 1 - torch.arange(m.shape[1], dtype=m.dtype, device=m.device)).clamp(min=0)
        decay = torch.pow(0.5, from_end / torch.where(on, hl, torch.ones_like(hl)))
        return m * torch.where(on, floor + (1 - floor) * decay, torch.ones_like(decay))

    def scores(self, hist: torch.Tensor, hmask: torch.Tensor, cand: torch.Tensor | None) -> torch.Tensor:
        """hist [B, H] item ids, hmask [B, H], cand [B, C] ids or None (all items) -> [B, C]."""
        B = hist.shape[0]
        if self.kind == "none":
            shape = (B, self.n_items) if cand is None else cand.shape
            return torch.zeros(shape, device=hist.device)
        if self.kind == "mf":
            m = self.history_weights(hmask)
            pu = (self.P(hist) * m.unsqueeze(-1)).sum(1) / m.sum(1, keepdim=True).clamp(min=1e-6)
            if cand is None:
                return pu @ self.Q.weight.T
            return torch.einsum("bd,bcd->bc", pu, self.Q(cand))
        # summed, as the runtime's bincount sums: padded slots (id 0, weight 0) add nothing. scatter_ (last
        # write wins) let a row's padding overwrite item 0's vote with 0 whenever item 0 was in a history
        X = torch.zeros(B, self.n_items, device=hist.device)
        X.scatter_add_(1, hist, self.history_weights(hmask))
        # in fp32 even under bf16 autocast: CUDA has no bf16 sparse product ("addmm_sparse_cuda" not implemented
        # for 'BFloat16', seen on an H200), and the vote sums hundreds of small weights that bf16 would round
        if self._votes is None:
            self._votes = self.votes_by_item(self.W)
        with torch.autocast(device_type=X.device.type, enabled=False):
            full = torch.sparse.mm(self._votes, X.t()).t()  # [B, N]
            n, lo = hmask.sum(1), 0
            for hi, Vs in self.short:  # histories of lo+1..hi items read that table (as the device does)
                rows = torch.nonzero((n > lo) & (n <= hi)).flatten()
                if len(rows):
                    full[rows] = torch.sparse.mm(Vs, X[rows].t()).t()
                lo = hi
        return full if cand is None else torch.gather(full, 1, cand)


def neighbour_table(W: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k neighbours per item by |weight| (row i: the items j that item i votes for).

    Negative weights are kept: EASE's negative weights carry signal (on ml-100k keeping the
    200 largest |w| loses 0.001 nDCG@10 against the dense matrix; dropping negatives loses 0.005).
    """
    k = min(k, W.shape[1] - 1)
    idx = np.argpartition(-np.abs(W), k - 1, axis=1)[:, :k]
    w = np.take_along_axis(W, idx, 1)
    order = np.argsort(-np.abs(w), axis=1, kind="stable")
    idx, w = np.take_along_axis(idx, order, 1), np.take_along_axis(w, order, 1)
    return idx.astype(np.int32), w.astype(np.float32)


# ------------------------------------------------------------------------- the recommender
class Recommender(nn.Module):
    """User model + head + CF part (the item tower lives beside it: it is exported separately)."""

    def __init__(self, dim: int, user_model: nn.Module, head: nn.Module, cf: CFPart, pop: np.ndarray):
        super().__init__()
        self.dim = dim
        self.user_model = user_model
        self.head = head
        self.cf = cf
        self.register_buffer("pop", torch.tensor(pop, dtype=torch.float32))
        # seconds; 0 = the static popularity above, else the blend reads trending popularity (export/trend.py)
        # as of each request's time with this half-life: chosen by the calibration, saved with the weights
        self.register_buffer("pop_half_life", torch.zeros(()))

    def user(self, hist_emb, hmask):
        return self.user_model(hist_emb, hmask)
