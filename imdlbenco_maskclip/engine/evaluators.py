"""The paper's evaluation protocol (spec section 3) on BenCo's tester and evaluators.

Per test set, in one pass of BenCo's ``test_one_epoch``:

* pixel F1 and IoU (BenCo ``PixelF1`` / ``PixelIOU``, threshold 0.5, mode "origin"),
  per image, averaged over the locally edited fakes only;
* image F1, accuracy and AUC (BenCo ``ImageF1`` / ``ImageAccuracy`` / ``ImageAUC``) over
  all images; NaN for models without ``pred_label`` (e.g. IML_ViT);
* how many images and partial fakes were evaluated;
* the BR-Gen paper's figures (``brgen_protocol``): Recall@50 of real and generated images,
  Split A/B, results by edited area, from per-image records (``ImageRecords``).

A partial fake is recognised from the batch itself: ``label == 1`` and a mask that is
neither empty nor full inside ``shape_mask`` (the whole image without padding). Fully
generated fakes have all-one masks and reals all-zero ones (BenCo's convention), so this
needs nothing but what BenCo's datasets return and works for OpenSDID, BenCo JSON and
folder datasets alike. A partial edit absent from the evaluated image (lost in resizing, or
outside the top-left crop that BenCo's padding mode keeps of larger images) cannot be
scored there and is not counted; ``evaluate`` warns when the count differs from the
dataset's own ``num_partial``.

Exactly once: BenCo's tester feeds each rank's share to ``batch_update`` and the same tail
(``N % (world * batch)`` samples) to ``remain_update`` on every rank. The per-sample
evaluators here return None (so the tester neither logs nor asserts per batch), keep
sums and counts, all-reduce the shares in ``epoch_update`` and add the tail once.
BenCo's image evaluators already gather the shares and append the (identical) tail.
"""
import math

import numpy as np
import torch
import torch.distributed as dist

import IMDLBenCo.training_scripts.utils.misc as misc
from IMDLBenCo.evaluation import AbstractEvaluator, ImageAccuracy, ImageAUC, ImageF1, PixelF1, PixelIOU
from IMDLBenCo.training_scripts.tester import test_one_epoch

from ..compat import collective_device
from .brgen_protocol import protocol_figures
from .models import fake_probabilities

METRIC_KEYS = ("pixel_f1", "pixel_iou", "image_f1", "image_acc", "image_auc")
# --image_score_from_mask: how a model without image-level output (CAT-Net, IML-ViT) gets
# image scores P(fake); the paper gives such models image numbers without saying how.
IMAGE_SCORE_RULES = {"none": "none: its image metrics are n/a",
                     "max": "the maximum over the image of its predicted mask P(manipulated)"}


def partial_rows(mask, label, shape_mask=None):
    """Bool [B]: rows that are partial fakes (label 1, mask neither empty nor full)."""
    valid = torch.ones_like(mask) if shape_mask is None else shape_mask.to(mask.dtype)
    positive = (mask * valid).flatten(1).sum(dim=1)
    area = valid.flatten(1).sum(dim=1)
    return (label.reshape(-1) == 1) & (positive > 0) & (positive < area)


SCAN_LIMIT = 256  # samples read at most to find partial fakes in a dataset without metadata


def partial_fake_indices(dataset, count):
    """Indices of the first ``count`` partial fakes of ``dataset`` (fewer if it has fewer): from
    its metadata (OpenSDID's ``is_partial``), else by reading samples from the start, so two
    checkpoints tested on one set are shown the same images."""
    known = getattr(dataset, "is_partial", None)
    if known is not None:
        return [int(i) for i in np.flatnonzero(known)[:count]]
    found = []
    for index in range(min(len(dataset), SCAN_LIMIT)):
        sample = dataset[index]
        label = torch.as_tensor(sample["label"]).reshape(1)
        shape_mask = sample.get("shape_mask")
        if partial_rows(sample["mask"][None], label, None if shape_mask is None else shape_mask[None])[0]:
            found.append(index)
            if len(found) == count:
                break
    return found


class _CountedOnce(AbstractEvaluator):
    """Sum and count of per-sample values with every sample counted once (module docstring)."""

    key = None

    def __init__(self, name):
        super().__init__()
        self.name = self.desc = name
        self.recovery()

    def _values(self, predict, mask, label, shape_mask):
        raise NotImplementedError

    def _result(self, total, count):
        raise NotImplementedError

    def batch_update(self, predict=None, mask=None, label=None, shape_mask=None, **kwargs):
        values = self._values(predict, mask, label, shape_mask)
        self.total += values.double().sum().item()
        self.count += values.numel()
        return None

    def remain_update(self, predict=None, mask=None, label=None, shape_mask=None, **kwargs):
        values = self._values(predict, mask, label, shape_mask)
        self.tail_total += values.double().sum().item()
        self.tail_count += values.numel()
        return None

    def epoch_update(self):
        shares = torch.tensor([self.total, self.count], dtype=torch.float64)
        if misc.is_dist_avail_and_initialized():
            shares = shares.to(collective_device())
            dist.all_reduce(shares)
        total, count = shares.tolist()
        return self._result(total + self.tail_total, int(round(count)) + self.tail_count)

    def recovery(self):
        self.total, self.count = 0.0, 0
        self.tail_total, self.tail_count = 0.0, 0


class PartialFakePixelMetric(_CountedOnce):
    """A BenCo pixel evaluator's per-image values, averaged over partial fakes only."""

    def __init__(self, metric, key):
        self.metric = metric
        self.key = key
        super().__init__(f"partial-fake {metric.name}")

    def _values(self, predict, mask, label, shape_mask):
        rows = partial_rows(mask, label, shape_mask)
        if not rows.any():
            return torch.zeros(0)
        return self.metric.batch_update(predict[rows], mask[rows],
                                        None if shape_mask is None else shape_mask[rows])

    def _result(self, total, count):
        # NaN, not 0, when a set has no partial fake: BenCo's logger divides by counts.
        return total / count if count else math.nan


class SampleCount(_CountedOnce):
    """How many images (or partial fakes) the pass evaluated."""

    def __init__(self, name, key, partial_only):
        self.key = key
        self.partial_only = partial_only
        super().__init__(name)

    def _values(self, predict, mask, label, shape_mask):
        rows = partial_rows(mask, label, shape_mask) if self.partial_only else label.reshape(-1) >= 0
        return rows[rows].float()

    def _result(self, total, count):
        return float(count)


def image_score_from_mask(predict, shape_mask=None):
    """[B]: the largest P(manipulated) of each predicted mask, padding excluded."""
    if shape_mask is not None:
        predict = predict * shape_mask.to(predict.dtype)
    return predict.flatten(1).amax(dim=1)


def image_scores(predict, predict_label, shape_mask, rule):
    """[B] P(fake) per image: the model's ``pred_label``, else with ``rule="max"``
    :func:`image_score_from_mask`; None when the model gives no image score."""
    if predict_label is not None:
        return fake_probabilities({"pred_label": predict_label})
    if rule == "max" and predict is not None:
        return image_score_from_mask(predict, shape_mask)
    return None


class ImageMetricIfPredicted(AbstractEvaluator):
    """A BenCo image evaluator that yields NaN for models with no ``pred_label``, or, with
    ``rule="max"``, scores their images by :func:`image_score_from_mask`.

    Every rank runs the same model, so all of them skip or all feed: the evaluator's
    collectives stay matched. ``source`` says where the scores came from: "pred_label",
    the rule (``IMAGE_SCORE_RULES``), or None.
    """

    def __init__(self, inner, key, rule="none"):
        super().__init__()
        self.inner, self.key, self.rule = inner, key, rule
        self.name = self.desc = inner.name
        self.fed = False
        self.source = None  # kept after the pass, for the run's metadata

    def _scores(self, predict, predict_label, shape_mask):
        scores = image_scores(predict, predict_label, shape_mask, self.rule)
        if scores is not None:
            self.source = "pred_label" if predict_label is not None else self.rule
            self.fed = True
        return scores

    def batch_update(self, predict=None, predict_label=None, label=None, shape_mask=None, **kwargs):
        scores = self._scores(predict, predict_label, shape_mask)
        if scores is not None:
            self.inner.batch_update(scores, label)
        return None

    def remain_update(self, predict=None, predict_label=None, label=None, shape_mask=None, **kwargs):
        scores = self._scores(predict, predict_label, shape_mask)
        if scores is not None:
            self.inner.remain_update(scores, label)
        return None

    def epoch_update(self):
        if not self.fed:
            return math.nan
        try:
            return float(self.inner.epoch_update())
        except ValueError as exc:
            if not isinstance(self.inner, ImageAUC):
                raise
            print(f"{self.name}: undefined on this set ({exc}); reported as NaN")
            return math.nan

    def recovery(self):
        self.fed = False
        self.inner.recovery()


class ImageRecords(AbstractEvaluator):
    """Collects one record per image for the BR-Gen protocol (``brgen_protocol.protocol_figures``),
    every image once (module docstring: each rank's share all-gathered, the tail added once).

    ``epoch_update`` returns the number of images recorded (BenCo logs a number per
    evaluator) and leaves the figures in ``figures``. ``rule``: how a model without
    ``pred_label`` scores images (``evaluators.image_scores``).
    """

    key = None  # its figures, not its count, are the results

    def __init__(self, rule="none"):
        super().__init__()
        self.name = self.desc = "BR-Gen protocol images"
        self.rule = rule
        self.pixel_f1 = PixelF1(threshold=0.5, mode="origin")
        self.figures = None
        self.recovery()

    def _records(self, predict, predict_label, mask, label, shape_mask, name, mask_area):
        label = label.reshape(-1)
        scores = image_scores(predict, predict_label, shape_mask, self.rule)
        scores = [math.nan] * len(label) if scores is None else scores.double().cpu().tolist()
        pixel = [math.nan] * len(label)
        if predict is not None:
            rows = partial_rows(mask, label, shape_mask)
            if rows.any():
                values = self.pixel_f1.batch_update(predict[rows], mask[rows],
                                                    None if shape_mask is None else shape_mask[rows])
                for i, value in zip(torch.nonzero(rows).flatten().tolist(), values.double().cpu().tolist()):
                    pixel[i] = value
        areas = ([math.nan] * len(label) if mask_area is None
                 else torch.as_tensor(mask_area).double().reshape(-1).cpu().tolist())
        return [{"label": int(lab), "score": s, "name": str(n), "area": a, "pixel_f1": f}
                for lab, s, n, a, f in zip(label.cpu().tolist(), scores, name, areas, pixel)]

    def batch_update(self, predict=None, predict_label=None, mask=None, label=None, shape_mask=None,
                     name=None, mask_area=None, **kwargs):
        self.share += self._records(predict, predict_label, mask, label, shape_mask, name, mask_area)
        return None

    def remain_update(self, predict=None, predict_label=None, mask=None, label=None, shape_mask=None,
                      name=None, mask_area=None, **kwargs):
        self.tail += self._records(predict, predict_label, mask, label, shape_mask, name, mask_area)
        return None

    def epoch_update(self):
        shares = [self.share]
        if misc.is_dist_avail_and_initialized():
            shares = [None] * dist.get_world_size()
            dist.all_gather_object(shares, self.share)
        records = [r for share in shares for r in share] + self.tail
        self.figures = protocol_figures(records)
        return float(len(records))

    def recovery(self):
        self.share, self.tail = [], []


def image_score_source(evaluators):
    """Where the image metrics of the last pass came from: "pred_label", a key of
    ``IMAGE_SCORE_RULES``, or None (not scored)."""
    return next((ev.source for ev in evaluators if isinstance(ev, ImageMetricIfPredicted)), None)


def build_evaluators(image_score_rule="none"):
    """The protocol's evaluators; build them after the process group exists (BenCo reads
    the world size in the image evaluators' constructors). ``image_score_rule``: a key of
    ``IMAGE_SCORE_RULES``, for models without ``pred_label``."""
    return [
        PartialFakePixelMetric(PixelF1(threshold=0.5, mode="origin"), "pixel_f1"),
        PartialFakePixelMetric(PixelIOU(threshold=0.5, mode="origin"), "pixel_iou"),
        ImageMetricIfPredicted(ImageF1(threshold=0.5), "image_f1", image_score_rule),
        ImageMetricIfPredicted(ImageAccuracy(threshold=0.5), "image_acc", image_score_rule),
        ImageMetricIfPredicted(ImageAUC(), "image_auc", image_score_rule),
        SampleCount("images evaluated", "n_images", partial_only=False),
        SampleCount("partial fakes evaluated", "n_partial", partial_only=True),
        ImageRecords(image_score_rule),
    ]


def evaluate(model, loaders, evaluators, device, epoch, args, log_writers=None, is_test=True, announce=None,
             report=None):
    """Run BenCo's ``test_one_epoch`` on each loader -> {name: {metric key: value}}.

    ``log_writers``: {name: SummaryWriter} (one per set, so no set's logs land in
    another's) or a single writer shared by all sets (BenCo tags carry the set name).
    ``announce(name, loader)`` is called before each set's pass and ``report(name, metrics,
    dataset)`` after it: the commands pass ``reporting``'s printers.
    """
    results = {}
    for name, loader in loaders.items():
        if announce is not None:
            announce(name, loader)
        writer = log_writers.get(name) if isinstance(log_writers, dict) else log_writers
        stats = test_one_epoch(model, data_loader=loader, evaluator_list=evaluators, device=device, epoch=epoch,
                               name=name, log_writer=writer, print_freq=args.print_freq, args=args,
                               is_test=is_test)
        metrics = {ev.key: float(stats[ev.name]) for ev in evaluators if ev.key}
        metrics["n_images"] = int(round(metrics["n_images"]))
        metrics["n_partial"] = int(round(metrics["n_partial"]))
        for ev in evaluators:
            metrics.update(getattr(ev, "figures", None) or {})
        if report is not None:
            report(name, metrics, loader.dataset)
        results[name] = metrics
    return results
