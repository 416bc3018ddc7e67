import math

import pytest
import torch

from trcnas.nas import metrics


def test_miou_hand_computed_and_ignore():
    m = metrics.ConfusionMeter(3)
    pred = torch.tensor([[0, 0, 1, 2]])
    tgt = torch.tensor([[0, 1, 1, 255]])
    m.update(pred, tgt)
    # class 0: inter 1, union 2 ; class 1: inter 1, union 2 ; class 2: absent everywhere (pixel ignored),
    # averaged in with IoU 0 as the ATRC reference does
    assert m.compute()["mIoU"] == pytest.approx(100 / 3)


def test_miou_accumulates_dataset_not_batch_means():
    m = metrics.ConfusionMeter(2)
    m.update(torch.tensor([[0, 0, 0, 0]]), torch.tensor([[0, 0, 0, 1]]))  # batch mIoU (3/4 + 0)/2
    m.update(torch.tensor([[1]]), torch.tensor([[1]]))  # batch mIoU 1
    # dataset confusion: c0 inter 3 union 4; c1 inter 1 union 2 -> (0.75 + 0.5) / 2
    assert m.compute()["mIoU"] == pytest.approx(62.5)


def test_reset_clears_every_total():
    seg = metrics.ConfusionMeter(2)
    seg.update(torch.tensor([[1, 0]]), torch.tensor([[0, 0]]))
    seg.reset()
    seg.update(torch.tensor([[1, 0]]), torch.tensor([[1, 0]]))
    assert seg.compute()["mIoU"] == pytest.approx(100.0)
    d = metrics.DepthMeter()
    d.update(torch.full((1, 1, 2, 2), 5.0), torch.ones(1, 1, 2, 2))
    d.reset()
    d.update(torch.full((1, 1, 2, 2), 2.0), torch.ones(1, 1, 2, 2))
    assert d.compute()["rmse"] == pytest.approx(1.0)
    n = metrics.NormalsMeter()
    n.update(torch.tensor([0.0, 1, 0]).view(1, 3, 1, 1), torch.tensor([1.0, 0, 0]).view(1, 3, 1, 1))
    n.reset()
    n.update(torch.tensor([1.0, 0, 0]).view(1, 3, 1, 1), torch.tensor([1.0, 0, 0]).view(1, 3, 1, 1))
    assert n.compute()["mean"] == pytest.approx(0.0, abs=1e-6) and n.compute()["median"] == 0.0
    s = metrics.SaliencyMeter(from_logits=False)
    s.update(torch.ones(1, 1, 1, 2), torch.tensor([0, 0]).view(1, 1, 1, 2))
    s.reset()
    s.update(torch.tensor([1.0, 0]).view(1, 1, 1, 2), torch.tensor([1, 0]).view(1, 1, 1, 2))
    assert s.compute()["maxF"] == pytest.approx(100.0)


def test_depth_rmse_over_valid_pixels_of_dataset():
    m = metrics.DepthMeter()
    m.update(torch.tensor([[[[1.0, 3.0], [9.0, 9.0]]]]), torch.tensor([[[[2.0, 3.0], [0.0, 0.0]]]]))
    m.update(torch.tensor([[[[4.0]]]]), torch.tensor([[[[2.0]]]]))
    # errors: 1, 0, 2 (zeros are invalid) -> sqrt(5/3)
    assert m.compute()["rmse"] == pytest.approx(math.sqrt(5 / 3))
    assert m.compute()["mae"] == pytest.approx(1.0)


def test_depth_predictions_are_clamped_at_zero_as_the_reference_does():
    m = metrics.DepthMeter()
    m.update(torch.tensor([[[[-3.0, 1.0]]]]), torch.tensor([[[[1.0, 1.0]]]]))
    # -3 counts as 0: errors 1 and 0 -> sqrt(1/2) (unclamped it would be sqrt(16/2))
    assert m.compute()["rmse"] == pytest.approx(math.sqrt(0.5))


def test_normals_mean_angle_atan2_and_rmse_distinct():
    m = metrics.NormalsMeter()
    t = torch.tensor([1.0, 0, 0]).view(1, 3, 1, 1).repeat(1, 1, 1, 3)
    p = torch.stack([torch.tensor([1.0, 0, 0]), torch.tensor([0, 1.0, 0]), torch.tensor([2.0, 0, 0])], -1)
    t[..., 2] = 0  # invalid ground truth at the third pixel
    m.update(p.view(1, 3, 1, 3), t)
    out = m.compute()
    assert out["mean"] == pytest.approx(45.0)  # angles 0 and 90
    assert out["rmse"] == pytest.approx(math.sqrt((0 + 90**2) / 2))
    assert metrics.angular_error_deg(torch.tensor([[1.0, 0, 0]]), torch.tensor([[-1.0, 0, 0]])).item() == \
        pytest.approx(180.0)


def test_saliency_maxf_hand_case():
    m = metrics.SaliencyMeter(from_logits=False)
    prob = torch.tensor([0.9, 0.8, 0.3, 0.1]).view(1, 1, 1, 4)
    tgt = torch.tensor([1, 0, 1, 0]).view(1, 1, 1, 4)
    m.update(prob, tgt)
    # threshold in (0.3, 0.8): P = 1/2? no: above {0.9, 0.8} -> P 1/2 R 1/2; threshold (0.1, 0.3): P 2/3 R 1
    f = lambda p, r: 1.3 * p * r / (0.3 * p + r)  # noqa: E731
    best = max(f(1.0, 0.5), f(0.5, 0.5), f(2 / 3, 1.0))
    assert m.compute()["maxF"] == pytest.approx(best * 100)


def test_delta_m_signs():
    hib = {"semseg": True, "depth": False}
    assert metrics.delta_m({"semseg": 44, "depth": 0.5}, {"semseg": 40, "depth": 0.5}, hib) == pytest.approx(5.0)
    assert metrics.delta_m({"semseg": 40, "depth": 0.6}, {"semseg": 40, "depth": 0.5}, hib) == pytest.approx(-10.0)


def test_delta_m_with_a_zero_baseline_is_nan_not_an_error():
    hib = {"semseg": True, "edge": True}
    assert math.isnan(metrics.delta_m({"semseg": 44, "edge": 3.0}, {"semseg": 40, "edge": 0.0}, hib))


def test_channel_ops_equal_the_plain_formulas():
    """nas/tensorops: the fast channel reductions and masked means give what the plain torch formulas give
    (float64, up to summation order), and a finite gradient at a zero vector."""
    import torch.nn.functional as F

    from trcnas.nas import losses
    from trcnas.nas.tensorops import channel_norm, cosine, masked_mean, unit

    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 17, 23, generator=g, dtype=torch.float64)
    y = torch.randn(4, 3, 17, 23, generator=g, dtype=torch.float64)
    x[0, :, 0, 0] = 0  # a zero vector
    torch.testing.assert_close(channel_norm(x), x.norm(dim=1), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(unit(x), F.normalize(x, dim=1), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(cosine(x, y, 1e-6), F.cosine_similarity(x, y, dim=1, eps=1e-6), rtol=1e-12, atol=1e-12)
    mask = torch.rand(4, 1, 17, 23, generator=g) > 0.3
    torch.testing.assert_close(masked_mean(x, mask), x[mask.expand_as(x)].mean(), rtol=1e-12, atol=1e-12)
    assert masked_mean(x, torch.zeros_like(mask)).isnan()

    p = x.clone().requires_grad_()
    t = F.normalize(y, dim=1)
    t[1, :, :5] = 0  # invalid target pixels
    loss = losses.normals_l1(p, t)
    valid = (t.norm(dim=1, keepdim=True) > 0.5).expand_as(t)
    torch.testing.assert_close(loss, (F.normalize(x, dim=1) - t).abs()[valid].mean(), rtol=1e-12, atol=1e-12)
    loss.backward()
    assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
    cos = losses.normals_cosine(x, t)
    ref = (1 - F.cosine_similarity(x, t, dim=1, eps=1e-6))[t.norm(dim=1) > 0.5].mean()
    torch.testing.assert_close(cos, ref, rtol=1e-12, atol=1e-12)
    d = torch.rand(4, 1, 17, 23, generator=g, dtype=torch.float64) - 0.2
    torch.testing.assert_close(losses.masked_l1(x[:, :1], d), (x[:, :1] - d).abs()[d > 0].mean(), rtol=1e-12,
                               atol=1e-12)
