"""Metric-learning objectives for :func:`deepfeat.finetuning.run.finetune` (``objective=``), on the pooled embedding.

``crossentropy`` is the default end-to-end classifier training. The metric objectives shape the backbone's
pre-logits embedding (what ``extract --layer pooled`` returns from the checkpoint, and what ``deepfeat fewshot``
evaluates):

- ``siamese``: the contrastive loss of Siamese networks (Hadsell, Chopra & LeCun 2006) over every pair of a
  mini-batch, on L2-normalised embeddings: same class ``d^2``, different class ``max(0, margin - d)^2``
  (margin 1.0); the positive and negative pair terms are averaged separately and summed, so the batch's class mix
  does not set their balance.
- ``triplet``: triplet loss with semi-hard negatives (Schroff et al. 2015, FaceNet), L2-normalised embeddings,
  margin 0.2: for every anchor-positive pair the closest negative that is still farther than the positive; when
  none exists, the farthest negative (as TensorFlow Addons' ``triplet_semihard_loss``).
- ``prototypical``: prototypical networks (Snell et al. 2017), episodes built from each mini-batch: every class
  with >= 2 images in the batch puts its first half in the support set and the rest in the query set; queries are
  classified by softmax over negative squared Euclidean distances to the support means.

The checkpoint keeps the usual layout: its linear head is trained at the same time as a *probe* (cross-entropy on
the detached embedding, so it never shapes the backbone); its validation loss and accuracy are what the training
loop reports and what picks the best epoch. The backbone's own 1000-way classifier is not trained by the metric
objectives.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from deepfeat.finetuning.training import backbone_of

OBJECTIVES = ("crossentropy", "siamese", "triplet", "prototypical")
SIAMESE_MARGIN = 1.0
TRIPLET_MARGIN = 0.2


def _pairwise_sq(e: torch.Tensor) -> torch.Tensor:
    sq = (e * e).sum(1)
    return (sq[:, None] + sq[None, :] - 2 * e @ e.T).clamp_min(0)


def contrastive_loss(emb: torch.Tensor, y: torch.Tensor, margin: float = SIAMESE_MARGIN) -> torch.Tensor:
    """Contrastive loss over all pairs of the batch (``emb`` (n, d), ``y`` (n,)); 0 without pairs."""
    e = F.normalize(emb, dim=1)
    d2 = _pairwise_sq(e)
    d = (d2 + 1e-12).sqrt()
    same = y[:, None] == y[None, :]
    upper = torch.triu(torch.ones_like(same), diagonal=1)
    pos, neg = same & upper, ~same & upper
    loss = emb.sum() * 0
    if pos.any():
        loss = loss + d2[pos].mean()
    if neg.any():
        loss = loss + F.relu(margin - d[neg]).pow(2).mean()
    return loss


def triplet_semihard_loss(emb: torch.Tensor, y: torch.Tensor, margin: float = TRIPLET_MARGIN) -> torch.Tensor:
    """Mean triplet loss over every anchor-positive pair with its semi-hard (else farthest) negative."""
    e = F.normalize(emb, dim=1)
    d = (_pairwise_sq(e) + 1e-12).sqrt()
    same = y[:, None] == y[None, :]
    eye = torch.eye(len(y), dtype=torch.bool, device=y.device)
    anchor, positive = torch.nonzero(same & ~eye, as_tuple=True)
    if len(anchor) == 0 or bool(same.all()):
        return emb.sum() * 0
    d_ap = d[anchor, positive]                                  # (P,)
    d_an = d[anchor]                                            # (P, n)
    is_neg = ~same[anchor]
    semi = is_neg & (d_an > d_ap[:, None]) & (d_an < d_ap[:, None] + margin)
    inf = torch.finfo(d.dtype).max
    hardest_semi = torch.where(semi, d_an, torch.full_like(d_an, inf)).min(1).values
    farthest = torch.where(is_neg, d_an, torch.full_like(d_an, -inf)).max(1).values
    chosen = torch.where(semi.any(1), hardest_semi, farthest)
    return F.relu(d_ap - chosen + margin).mean()


def prototypical_loss(emb: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the batch's query halves against its support-half class means (squared Euclidean)."""
    protos, queries, targets = [], [], []
    for c in torch.unique(y):
        rows = torch.nonzero(y == c, as_tuple=True)[0]
        if len(rows) < 2:
            continue
        k = len(rows) // 2
        protos.append(emb[rows[:k]].mean(0))
        queries.append(emb[rows[k:]])
        targets.append(torch.full((len(rows) - k,), len(protos) - 1, dtype=torch.long, device=y.device))
    if len(protos) < 2:
        return emb.sum() * 0
    P, Q = torch.stack(protos), torch.cat(queries)
    logits = -((Q[:, None, :] - P[None, :, :]) ** 2).sum(-1)
    return F.cross_entropy(logits, torch.cat(targets))


LOSSES = {"siamese": contrastive_loss, "triplet": triplet_semihard_loss, "prototypical": prototypical_loss}


class EmbeddingProbe(nn.Module):
    """Runs the fine-tuning model so that the pooled embedding is kept (``self.embedding``) and the returned
    logits come from the linear head applied to the *detached* embedding (a probe).

    ``stages``: when training runs on cached trunk activations (:class:`deepfeat.finetuning.trunk.SuffixClassifier`),
    the stages after the frozen ones; the input is then a frozen stage's cached output, not an image."""

    def __init__(self, model: nn.Module, head: str, stages: nn.Module | None = None):
        super().__init__()
        self.model, self.head, self.stages = model, head, stages
        self.embedding = None

    def forward(self, x):
        body = backbone_of(self.model, self.head)
        features = body.forward_features(x) if self.stages is None else self.stages(x)
        emb = body.forward_head(features, pre_logits=True)
        self.embedding = emb
        if self.head == "keep1000":
            return self.model.head(body.get_classifier()(emb.detach()).detach())
        return body.get_classifier()(emb.detach())


class MetricCriterion:
    """Metric loss on the probe's kept embedding plus the probe's cross-entropy (which reaches the head only)."""

    def __init__(self, objective: str, probe: EmbeddingProbe, weight=None):
        self.loss, self.probe = LOSSES[objective], probe
        self.ce = nn.CrossEntropyLoss(weight=weight)

    def __call__(self, logits, y):
        return self.loss(self.probe.embedding.float(), y) + self.ce(logits, y)


def use_objective(stepper, model: nn.Module, head: str, objective: str, weight=None):
    """Switch a :class:`deepfeat.finetuning.training.Stepper` from cross-entropy to a metric ``objective``."""
    if objective == "crossentropy":
        return stepper
    body = backbone_of(model, head)
    if not (hasattr(body, "forward_features") and hasattr(body, "forward_head")):
        from deepfeat.errors import DeepfeatError

        raise DeepfeatError(f"objective={objective!r} needs a timm-style model with forward_features / "
                            f"forward_head(pre_logits=True); {type(body).__name__} has neither")
    suffix = stepper.model if stepper.model is not model else None  # training on cached trunk activations
    probe = EmbeddingProbe(model, head, stages=getattr(suffix, "stages", None))
    stepper.model, stepper.criterion = probe, MetricCriterion(objective, probe, weight)
    return stepper
