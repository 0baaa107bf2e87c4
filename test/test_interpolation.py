"""Bilinear sampling: values vs grid_sample, gradient vs autograd, validity, batching."""
import pytest
import torch
import torch.nn.functional as F

from pixloc_ros.core.engine.interpolation import BilinearSampler, interpolate


def grid_sample_reference(fmap, p):
    """torch's bilinear sampling with the pixel-centre convention (align_corners=True)."""
    B = p.shape[0]
    _, C, H, W = fmap.shape
    scale = torch.tensor([W - 1, H - 1], dtype=p.dtype)
    grid = (p / scale * 2 - 1)[:, None]  # (B,1,N,2)
    out = F.grid_sample(fmap.expand(B, -1, -1, -1) if fmap.shape[0] == 1 else fmap, grid,
                        mode="bilinear", align_corners=True)
    return out[:, :, 0].transpose(1, 2)  # (B,N,C)


def random_points(B, N, H, W, seed=0, margin=0.0):
    g = torch.Generator().manual_seed(seed)
    p = torch.rand(B, N, 2, generator=g, dtype=torch.float64)
    return p * torch.tensor([W - 1 - 2 * margin, H - 1 - 2 * margin], dtype=torch.float64) + margin


@pytest.mark.parametrize("Bf", [1, 3])
def test_values_match_grid_sample(Bf):
    fmap = torch.randn(Bf, 5, 12, 17, dtype=torch.float64)
    p = random_points(3, 40, 12, 17)
    s = interpolate(fmap, p)
    assert s.values.shape == (3, 40, 5) and s.grad.shape == (3, 40, 5, 2) and s.valid.all()
    torch.testing.assert_close(s.values, grid_sample_reference(fmap, p), atol=1e-12, rtol=0)
    # exactly at pixel centres (including the last row/column) we get the pixel values
    q = torch.tensor([[[0.0, 0.0], [16.0, 11.0], [16.0, 0.0], [3.0, 7.0]]], dtype=torch.float64).expand(3, -1, -1)
    v = interpolate(fmap, q).values
    expect = torch.stack([fmap[:, :, 0, 0], fmap[:, :, 11, 16], fmap[:, :, 0, 16], fmap[:, :, 7, 3]], 1)
    torch.testing.assert_close(v, expect.expand(3, -1, -1), atol=1e-12, rtol=0)


def test_gradient_matches_autograd():
    fmap = torch.randn(2, 4, 9, 11, dtype=torch.float64)
    p = random_points(2, 25, 9, 11, seed=1, margin=0.1)
    # keep away from integer coordinates, where the interpolant is not differentiable
    frac = p - p.floor()
    p = torch.where((frac < 0.05) | (frac > 0.95), p.floor() + 0.5, p)
    s = interpolate(fmap, p)

    def f(pts):
        return interpolate(fmap, pts, gradients=False).values

    J = torch.autograd.functional.jacobian(f, p)  # (2,25,4,2,25,2)
    J = torch.stack([torch.stack([J[b, n, :, b, n] for n in range(25)]) for b in range(2)])
    torch.testing.assert_close(s.grad, J, atol=1e-10, rtol=0)


def test_shared_map_is_not_copied_and_matches_per_batch_maps():
    fmap = torch.randn(1, 3, 8, 8, dtype=torch.float64)
    sampler = BilinearSampler(fmap)
    assert sampler.table.shape == (64, 3)  # one copy, whatever the number of hypotheses
    p = random_points(4, 10, 8, 8, seed=2)
    shared = sampler.sample(p)
    per_batch = interpolate(fmap.expand(4, -1, -1, -1).contiguous(), p)
    torch.testing.assert_close(shared.values, per_batch.values)
    torch.testing.assert_close(shared.grad, per_batch.grad)


def test_validity_and_pad():
    fmap = torch.randn(1, 2, 10, 10, dtype=torch.float64)
    p = torch.tensor([[[0.0, 0.0], [9.0, 9.0], [9.5, 3.0], [-0.1, 3.0], [3.0, 3.0], [1.0, 8.5], [float("nan"), 2.0]]],
                     dtype=torch.float64)
    s = interpolate(fmap, p)
    assert s.valid.tolist() == [[True, True, False, False, True, True, False]]
    assert torch.isfinite(s.values[:, :6]).all()
    s2 = interpolate(fmap, p, pad=1)
    assert s2.valid.tolist() == [[False, False, False, False, True, False, False]]


def test_half_precision_table_returns_float32():
    fmap = torch.randn(1, 8, 6, 7)
    sampler = BilinearSampler(fmap, dtype=torch.float16)
    p = random_points(2, 5, 6, 7).float()
    s = sampler.sample(p)
    assert s.values.dtype == torch.float32
    torch.testing.assert_close(s.values, interpolate(fmap, p).values, atol=1e-2, rtol=0)


def test_empty_points():
    s = interpolate(torch.randn(1, 3, 5, 5), torch.zeros(2, 0, 2))
    assert s.values.shape == (2, 0, 3) and s.valid.shape == (2, 0) and s.grad.shape == (2, 0, 3, 2)


def test_central_gradient_is_the_reference_difference_everywhere():
    """(F(p + 1px) - F(p - 1px)) / 2 of grid_sample with zero padding, including the outermost
    pixel band where the +-1 px samples leave the map; values equal the analytic sampler's."""
    fmap = torch.randn(2, 4, 9, 13, dtype=torch.float64)
    p = random_points(2, 300, 9, 13, seed=5)
    p[:, :4] = torch.tensor([[0.0, 0.0], [12.0, 8.0], [0.3, 7.9], [12.0, 0.0]], dtype=torch.float64)
    s = interpolate(fmap, p, gradient="central")
    ex = torch.tensor([1.0, 0.0], dtype=torch.float64)
    ey = torch.tensor([0.0, 1.0], dtype=torch.float64)
    gx = (grid_sample_reference(fmap, p + ex) - grid_sample_reference(fmap, p - ex)) / 2
    gy = (grid_sample_reference(fmap, p + ey) - grid_sample_reference(fmap, p - ey)) / 2
    torch.testing.assert_close(s.grad, torch.stack([gx, gy], -1), atol=1e-12, rtol=0)
    torch.testing.assert_close(s.values, interpolate(fmap, p).values, atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match="Unsupported gradient"):
        BilinearSampler(fmap, gradient="sobel")
