"""Distillation: a student keeping a subset of the teacher's layers, trained to match the
teacher's item embeddings (cosine + MSE on catalog texts and augmented views) and its ranking
(KL between teacher and student score distributions for real users over candidate items)."""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from genre_edge import config as cfg
from genre_edge.errors import ConfigError
from genre_edge.text_template import render

from . import require
from .augment import AugmentConfig, augmented_texts
from .curves import Curves
from .device import DEVICES, resolve_device, run_facts, seed_torch
from .distributed import DataParallel
from .model_folder import MODEL_MARKERS, ModelDir, check_replaceable, save_student
from .precision import PRECISIONS, autocast, check_precision
from .prepare import Prepared
from .requests import encoder_texts
from .scoring import Scorer
from .text import tokenize

log = logging.getLogger(__name__)

VIEWS = ("full", "title", "title_year", "genres")


@dataclass(frozen=True)
class DistillConfig:
    # Teacher layers the student keeps, in order. Keep the last one: the teacher's output space (and its
    # fine-tuned top layer) lives there — on the ml-100k teacher, 4 epochs reach embedding cosine 0.948
    # with (0, 2, 5) against 0.889 with (0, 2, 4). Two layers (0, 5) encode a query 1.45x faster, but the
    # offline A/B replay on ml-100k test users gives them -1.0% nDCG@10 (p = 0.07) and -1.8% HitRate@10
    # (p = 0.01); the encoder runs only for free-text queries and new items, while quality shows in every
    # request, so three layers stay the default (benchmarks/results/compare-*.md, ab-*.md).
    layers: tuple[int, ...] = (0, 2, 5)
    epochs: int = cfg.bounded(8, 1, 1000)
    batch_size: int = cfg.bounded(64, 2, 4096)
    lr: float = cfg.bounded(4e-4, 0.0, 1.0)
    warmup: float = cfg.bounded(0.05, 0.0, 0.9, "share of steps with linear lr warm-up (then cosine decay)")
    # The token/position tables are 2/3 of MiniLM's weights; they are already right (the teacher's)
    # and updating them densely every step made distillation ~5x slower here for no gain.
    train_embeddings: bool = False
    views: tuple[str, ...] = cfg.choice(("full", "title", "genres"), VIEWS)
    kl_weight: float = cfg.bounded(1.0, 0.0, 100.0)
    mse_weight: float = cfg.bounded(1.0, 0.0, 100.0)
    seed: int = cfg.bounded(0, 0, cfg.MAX_SEED, "distillation seed")
    threads: int = cfg.bounded(0, 0, 256)
    precision: str = cfg.choice("fp32", PRECISIONS, "the student's forward pass: fp32, or bf16 autocast "
                                "(export/precision.py)")
    device: str = cfg.choice("cpu", DEVICES, "where distillation runs: cpu, cuda or auto (export/device.py)")
    # extra views: augmented renderings of each item (field dropout, token noise, WordNet synonyms)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # Free-text requests (export/requests.py, the "train" part: no template or mood phrase of the
    # benchmark's "test" part), up to this many per kind, and what the parser leaves of them to embed:
    # without them the student matches the teacher on item texts only and retrieves 39% of its top-10
    # for requests. 0 = off.
    requests_per_kind: int = cfg.bounded(400, 0, 100000)
    # For request texts, also match the teacher's ranking of the catalog (KL between the softmax of
    # request x item scores, teacher items on both sides): what a request retrieves is what matters.
    # Chosen on validation (the export's quality rows, quick teacher, 4 epochs, one seed): weight
    # 1 / 4 / 10 -> validation nDCG@10 kept 0.982 / 0.988 / 0.990, request precision@10 kept (valid
    # requests) 1.047 / 1.042 / 1.060, cold-validation nDCG@10 kept - / 0.77 / 0.86.
    request_kl_weight: float = cfg.bounded(10.0, 0.0, 100.0)

    def validate(self):
        if not self.layers or len(set(self.layers)) != len(self.layers) or min(self.layers) < 0:
            raise ConfigError("layers: a non-empty list of distinct, non-negative teacher layer indices")


class _ItemFields:
    """The template fields of items.json (what augmentation renders from)."""

    def __init__(self, it: dict):
        self.it = it

    def __len__(self):
        return len(self.it["ids"])

    def fields(self, i: int) -> dict[str, str]:
        it, cats = self.it, ", ".join(self.it["categories"][i])
        return {"id": it["ids"][i], "title": it["title"][i], "year": str(it["year"][i]) if it["year"][i] else "",
                "genres": cats, "categories": cats}


def _encode(tower, T, texts: list[str]):
    from .models import by_length

    ids, mask = tokenize(T.path / "encoder" / "tokenizer.json", texts, T.conf.encoder.max_tokens)
    return by_length(tower, ids, mask, next(tower.parameters()).device)


STEP_PART = 32  # rows per part of a training step's forward pass on a CPU (16: the same; 8: slower)


def batch_loss(torch, conf: DistillConfig, student, ids, mask, target, items, U, E_t, a: float, user_rows):
    """One distillation batch's loss on the student's device: embedding match (cosine + MSE to the teacher's
    ``target`` rows), ranking match for item texts (KL of ``a``-sharpened scores of the teacher users ``U``
    [``user_rows``] over the batch's items, teacher rows ``E_t`` on the other side; ``items`` -1 for request
    texts) and, for request texts, the teacher's ranking of the whole catalog."""
    from .models import by_length

    dev = target.device
    with autocast(torch, conf.precision, dev.type):
        # on a CPU the batch runs as parts of similar length, each cut to its longest text: the same loss and
        # gradients (up to float rounding; dropout draws its masks per part), and a step of 64 texts 0.53 ->
        # 0.38 s here. A GPU gets the batch whole: padding costs it little, more launches would.
        e = by_length(student, ids, mask, dev, batch=STEP_PART if dev.type == "cpu" else max(len(ids), 1), grad=True)
    e = e.float()  # the losses in float32
    t = target
    loss = (1 - (e * t).sum(-1)).mean() + conf.mse_weight * ((e - t) ** 2).sum(-1).mean()
    keep = items >= 0
    if user_rows is not None:
        ub = U[torch.as_tensor(user_rows, device=dev)]
        st = torch.log_softmax(a * ub @ E_t[torch.as_tensor(items[keep], device=dev)].T, -1)
        ss = torch.log_softmax(a * ub @ e[torch.as_tensor(np.flatnonzero(keep), device=dev)].T, -1)
        loss = loss + conf.kl_weight * torch.nn.functional.kl_div(ss, st, log_target=True, reduction="batchmean")
    req = ~keep
    if conf.request_kl_weight and req.any():
        rows = torch.as_tensor(np.flatnonzero(req), device=dev)  # index lists, not masks: no host sync on a GPU
        st = torch.log_softmax(a * t[rows] @ E_t.T, -1)
        ss = torch.log_softmax(a * e[rows] @ E_t.T, -1)
        loss = loss + conf.request_kl_weight * torch.nn.functional.kl_div(ss, st, log_target=True,
                                                                          reduction="batchmean")
    return loss


def _view_text(view: str, it: dict, i: int, full: str) -> str:
    title, year = it["title"][i], it["year"][i]
    genres = ", ".join(it["categories"][i])
    if view == "full":
        return full
    if view == "title":
        return title
    if view == "title_year":
        return render("{title} ({year})", {"title": title, "year": str(year) if year else ""})
    return render("Genres: {genres}.", {"genres": genres}) or title


def distill(teacher_dir: str | Path, conf: DistillConfig, out_dir: str | Path, progress: bool = True,
            data_dir: str | None = None) -> dict:
    torch = require("torch", "export", "distillation")
    from tqdm.auto import tqdm

    from .models import ItemTower, by_length, load_hf_encoder

    # the student's folder replaces --out whole: never the teacher's, nor a folder of other files
    check_replaceable(Path(out_dir), [Path(teacher_dir)], MODEL_MARKERS, "model")
    t0 = time.perf_counter()
    dp = DataParallel.from_env()  # several processes (accelerate launch / torchrun): a share of every batch each
    out_dir = dp.out_dir(Path(out_dir))
    progress = progress and dp.main
    torch.set_num_threads(dp.threads(conf.threads) if dp.world > 1 else conf.threads or os.cpu_count() or 1)
    dev = resolve_device(torch, conf.device)  # cpu, or this process's GPU
    check_precision(conf.precision, dev.type)
    seed_torch(torch, conf.seed, dev)
    rng = np.random.default_rng(conf.seed)  # batch order and the users of the ranking loss: the same everywhere
    T = ModelDir(teacher_dir)
    n_layers = int(json.loads((T.path / "encoder" / "config.json").read_text())["num_hidden_layers"])
    if max(conf.layers) >= n_layers:
        raise ConfigError(f"layers: teacher has {n_layers} layers (0..{n_layers - 1}); got {list(conf.layers)}")
    t_tower, t_rec = T.modules()
    t_tower.to(dev)
    t_rec.to(dev)
    # student: the teacher's embeddings + the chosen layers + the teacher's adapter
    s_bert = load_hf_encoder(T.path / "encoder")
    s_bert.encoder.layer = torch.nn.ModuleList([s_bert.encoder.layer[i] for i in conf.layers])
    s_bert.config.num_hidden_layers = len(conf.layers)
    student = ItemTower(s_bert, T.conf.encoder.pooling, 0, True)
    student.adapter.load_state_dict(t_tower.adapter.state_dict())
    for n, p in student.named_parameters():
        p.requires_grad_(conf.train_embeddings or not n.startswith("bert.embeddings."))
    student.to(dev)
    dp.broadcast(student.parameters())
    # texts: every catalog item under several views (augmentation for robustness to short queries)
    it = T.items
    texts, item_of = [], []
    for v in conf.views:
        for i, full in enumerate(it["text"]):
            texts.append(_view_text(v, it, i, full))
            item_of.append(i)
    if conf.augment.active:
        for variant in augmented_texts(_ItemFields(it), T.conf.encoder.template, conf.augment):
            texts += variant
            item_of += list(range(len(variant)))
    n_req = 0
    if conf.requests_per_kind:
        req_texts = encoder_texts(it, "train", conf.requests_per_kind, T.conf.query_parser)
        texts += req_texts
        item_of += [-1] * len(req_texts)  # no item: the embedding is matched, the ranking (KL) loss skips them
        n_req = len(req_texts)
        log.info("distillation reads %d request texts besides %d item texts", n_req, len(texts) - n_req)
    valid_req = encoder_texts(it, "valid", 40, T.conf.query_parser) if conf.requests_per_kind else []
    valid_req_t = _encode(t_tower, T, valid_req) if valid_req else None  # the teacher's, once
    item_of = np.array(item_of)
    ids, mask = tokenize(T.path / "encoder" / "tokenizer.json", texts, T.conf.encoder.max_tokens)
    fids, fmask = tokenize(T.path / "encoder" / "tokenizer.json", list(it["text"]), T.conf.encoder.max_tokens)
    target = by_length(t_tower, ids, mask, dev)
    # teacher user vectors for the ranking (KL) loss
    prep = Prepared(T.conf, data_dir)
    users = np.flatnonzero([len(h) for h in prep.hist])
    scorer = Scorer(T.conf, t_rec, T.emb, prep.hist)
    U = scorer.user_vectors(users)
    a = float(t_rec.head.log_a.exp()) if T.conf.cf.kind == "none" else 20.0  # temperature of the score softmax
    E_t = torch.as_tensor(T.emb, device=dev)
    opt = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=conf.lr)
    total = conf.epochs * ((len(texts) + conf.batch_size - 1) // conf.batch_size)
    warm = max(1, int(conf.warmup * total))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda k: min(1.0, (k + 1) / warm) * 0.5 * (1 + np.cos(np.pi * min(1.0, k / total))))
    history = []
    curves = Curves(out_dir, fresh=True)
    for ep in range(1, conf.epochs + 1):
        student.train()
        order = rng.permutation(len(texts))
        bs = conf.batch_size
        bar = tqdm(range(0, len(order), bs), desc=f"distill {ep}/{conf.epochs}",
                   disable=None if progress else True, leave=False)
        losses = []
        for s0 in bar:
            (sel,) = dp.shard(order[s0 : s0 + bs])  # this process's share of the batch
            L = int(mask[sel].sum(1).max())
            items = item_of[sel]
            # the ranking loss's teacher users (drawn only when it runs: the same random stream as always)
            user_rows = (rng.choice(len(U), size=min(64, len(U)), replace=False)
                         if conf.kl_weight and (items >= 0).any() else None)
            loss = batch_loss(torch, conf, student, ids[sel, :L], mask[sel, :L], target[torch.as_tensor(sel, device=dev)],
                              items, U, E_t, a, user_rows)
            opt.zero_grad()
            loss.backward()
            dp.average_grads([p for g in opt.param_groups for p in g["params"]])  # no-op in one process
            opt.step()
            sched.step()
            losses.append(dp.mean(loss.item()))
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
            curves.scalars(sched.last_epoch, {"loss": losses[-1]}, "distill_step/")
        student.eval()
        full = by_length(student, fids, fmask, dev)
        cos = (full * E_t).sum(-1)
        history.append({"epoch": ep, "loss": float(np.mean(losses)), "cos_mean": float(cos.mean()), "cos_min": float(cos.min())})
        if valid_req:  # held-out request texts (the "valid" part): how close the student stays on requests
            rc = (_encode(student, T, valid_req) * valid_req_t).sum(-1)
            history[-1].update(request_cos_mean=float(rc.mean()), request_cos_min=float(rc.min()))
        h = history[-1]
        curves.scalars(ep, {k: v for k, v in h.items() if k != "epoch"}, "distill/")
        log.info("distill epoch %d: loss %.4f, cosine to teacher mean %.4f min %.4f", ep, h["loss"], h["cos_mean"], h["cos_min"])
        if progress:
            print(f"distill epoch {ep}: loss {history[-1]['loss']:.4f}  cosine to teacher mean {history[-1]['cos_mean']:.4f} "
                  f"min {history[-1]['cos_min']:.4f}", flush=True)
    # write the student model folder: teacher's folder with the encoder replaced
    report = {"teacher": str(T.path), "layers": list(conf.layers), "views": list(conf.views), "history": history,
              "request_texts": n_req, **run_facts(torch, dev),
              "seconds": time.perf_counter() - t0, "config": cfg.to_dict(conf)}
    curves.close()  # before the folder is swapped: save_student carries the curves into the new folder
    save_student(T, Path(out_dir), student.bert, student.adapter, full.cpu().numpy(), report, cfg.dumps_toml(cfg.to_dict(conf)))
    dp.close()  # several processes: wait for all; the other ranks' private folders go
    return report
