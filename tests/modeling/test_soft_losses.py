"""Soft-target classification losses of the box predictor."""

import torch
import torch.nn.functional as F

from stages.modeling.soft_losses import (
    federated_classes,
    soft_sigmoid_cross_entropy,
    soft_softmax_cross_entropy,
    soft_target_matrix,
)


def _batch(num_classes=5, n=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, num_classes + 1, generator=g, requires_grad=True)
    gt = torch.randint(0, num_classes + 1, (n,), generator=g)  # num_classes = background
    return logits, gt


def test_softmax_loss_and_gradient_equal_onehot_when_eps_zero():
    num_classes = 5
    logits, gt = _batch(num_classes)
    onehot_rows = torch.eye(num_classes)[gt.clamp(max=num_classes - 1)]
    target = soft_target_matrix(gt, onehot_rows, num_classes)
    ours = soft_softmax_cross_entropy(logits, target)
    (g_ours,) = torch.autograd.grad(ours, logits)
    ref = F.cross_entropy(logits, gt)
    (g_ref,) = torch.autograd.grad(ref, logits)
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(g_ours, g_ref)


def test_sigmoid_loss_equals_detectron2_style_bce_for_onehot():
    num_classes = 5
    logits, gt = _batch(num_classes, seed=1)
    target = soft_target_matrix(gt, torch.eye(num_classes)[gt.clamp(max=num_classes - 1)], num_classes)
    ours = soft_sigmoid_cross_entropy(logits, target)
    # detectron2 main's sigmoid_cross_entropy_loss, written out
    t = torch.zeros(len(gt), num_classes + 1)
    t[torch.arange(len(gt)), gt] = 1
    ref = F.binary_cross_entropy_with_logits(logits[:, :-1], t[:, :num_classes], reduction="sum") / len(gt)
    torch.testing.assert_close(ours, ref)


def test_background_rows_are_onehot_background():
    gt = torch.tensor([0, 3, 3])  # num_classes = 3 -> rows 1, 2 are background
    soft = torch.tensor([[0.8, 0.1, 0.1], [0.2, 0.2, 0.6], [0.3, 0.3, 0.4]])
    target = soft_target_matrix(gt, soft, 3)
    torch.testing.assert_close(target, torch.tensor([[0.8, 0.1, 0.1, 0.0], [0, 0, 0, 1.0], [0, 0, 0, 1.0]]))


def test_soft_targets_change_the_gradient_towards_similar_class():
    logits = torch.zeros(1, 4, requires_grad=True)
    gt = torch.tensor([0])
    soft = torch.tensor([[0.9, 0.1, 0.0]])
    loss = soft_softmax_cross_entropy(logits, soft_target_matrix(gt, soft, 3))
    (grad,) = torch.autograd.grad(loss, logits)
    # d/dz = softmax - target: class 1 (target 0.1) is pushed up relative to class 2 (target 0)
    assert grad[0, 1] < grad[0, 2]


def test_federated_classes_keep_annotated_and_soft_classes():
    num_classes = 100
    gt = torch.tensor([7, 7, 100])
    soft = torch.zeros(3, num_classes)
    soft[:2, 7] = 0.9
    soft[:2, 42] = 0.1
    target = soft_target_matrix(gt, soft, num_classes)
    classes = federated_classes(target, torch.ones(num_classes), num_sampled=10, generator=torch.Generator().manual_seed(0))
    assert 7 in classes.tolist() and 42 in classes.tolist()
    assert len(set(classes.tolist())) == 10
