"""The reference of the fused gradient-ascent step (featvis_fast._ascent_reference): regularizer
gradients against autograd, the update against torch.optim, crop / uncrop as adjoints."""
import pytest
import torch

from featvis_fast import _ascent_reference as ref

REGS = [ref.Regularizers(l1=0.3), ref.Regularizers(l2=0.7), ref.Regularizers(lp=0.05, p=6.0),
        ref.Regularizers(lp=0.2, p=2.5), ref.Regularizers(tv=0.4, beta=2.0), ref.Regularizers(tv=0.4, beta=1.0),
        ref.Regularizers(tv=0.1, beta=1.5, tv_eps=1e-3),
        ref.Regularizers(l1=0.1, l2=0.2, lp=0.01, p=6.0, tv=0.3, beta=2.0)]


@pytest.mark.parametrize("r", REGS, ids=lambda r: ",".join(f"{k}={v}" for k, v in vars(r).items() if v))
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 3, 5, 7), (3, 3, 16, 9)], ids=lambda s: "x".join(map(str, s)))
def test_regularizer_gradients_equal_autograd(r, shape):
    x = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(sum(shape)))
    leaf = x.clone().requires_grad_()
    (expected,) = torch.autograd.grad(ref.regularizer_values(leaf, r).sum(), leaf)
    got = ref.regularizer_grad(x, r)
    assert expected.abs().max() > 0 or shape == (1, 1, 1, 1)
    assert torch.allclose(got, expected, rtol=1e-9, atol=1e-12)


def test_crop_and_uncrop_are_adjoint():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 2, 11, 13, dtype=torch.float64, generator=gen)
    y = torch.randn(3, 2, 7, 9, dtype=torch.float64, generator=gen)
    offsets = torch.tensor([[0, 0], [4, 4], [2, 3]])
    lhs = (ref.crop(x, offsets, 7, 9) * y).sum()
    rhs = (x * ref.uncrop(y, offsets, 11, 13)).sum()
    assert torch.allclose(lhs, rhs)


def _setup(seed=1, n=2, size=(3, 12, 10), crop=(8, 7)):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *size, dtype=torch.float64, generator=gen)
    g = torch.randn(n, size[0], *crop, dtype=torch.float64, generator=gen)
    offsets = torch.stack([torch.randint(0, size[1] - crop[0] + 1, (n,), generator=gen),
                           torch.randint(0, size[2] - crop[1] + 1, (n,), generator=gen)], dim=1)
    return x, g, offsets


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "nesterov"])
@pytest.mark.parametrize("normalize", [False, True])
def test_steps_equal_torch_optim_on_the_negated_direction(optimizer, normalize):
    x, _, _ = _setup()
    r = ref.Regularizers(l2=0.1, tv=0.2, lp=0.01, p=6.0)
    param = x.clone().requires_grad_()
    opt = (torch.optim.Adam([param], lr=0.05, betas=(0.8, 0.95), eps=1e-8) if optimizer == "adam"
           else torch.optim.SGD([param], lr=0.05, momentum=0.8, nesterov=optimizer == "nesterov"))
    mine, m = x.clone(), torch.zeros_like(x)
    v = torch.zeros_like(x) if optimizer == "adam" else None
    for step in range(1, 4):
        _, g, offsets = _setup(seed=10 + step)
        full = ref.uncrop(g, offsets, 12, 10)
        if normalize:
            full = full / (full.abs().mean(dim=(1, 2, 3), keepdim=True) + 1e-8)
        with torch.no_grad():
            direction = full - ref.regularizer_grad(param.detach(), r)
        param.grad = -direction
        opt.step()
        mine, m, v, _ = ref.ascent_step(mine, g, offsets, m, v, step=step, lr=0.05, optimizer=optimizer, momentum=0.8,
                                        betas=(0.8, 0.95), normalize=normalize, regularizers=r)
        assert torch.allclose(mine, param.detach(), rtol=1e-10, atol=1e-12), f"step {step}"


def test_nesterov_looks_ahead_along_the_momentum():
    """From the second step on, Nesterov's update differs from plain momentum's by lr * momentum^2 * m."""
    x, g, offsets = _setup()
    m0 = torch.randn_like(x)
    plain, m_plain, _, _ = ref.ascent_step(x, g, offsets, m0, None, step=2, lr=0.1, optimizer="sgd", momentum=0.9)
    ahead, m_ahead, _, _ = ref.ascent_step(x, g, offsets, m0, None, step=2, lr=0.1, optimizer="nesterov", momentum=0.9)
    d = ref.uncrop(g, offsets, 12, 10)
    assert torch.equal(m_plain, m_ahead)
    assert torch.allclose(ahead - x, 0.1 * (d + 0.9 * m_ahead), rtol=1e-12, atol=1e-12)
    assert not torch.allclose(ahead, plain)


def test_clip_and_next_crop():
    x, g, offsets = _setup()
    nxt = torch.tensor([[1, 2], [0, 3]])
    new, _, _, jittered = ref.ascent_step(x, g * 100, offsets, torch.zeros_like(x), None, step=1, lr=1.0,
                                          clip=(-0.5, 0.5), next_offsets=nxt, crop_size=(8, 7))
    assert new.min() >= -0.5 and new.max() <= 0.5 and (new.abs() == 0.5).any()
    assert torch.equal(jittered, torch.stack([new[0, :, 1:9, 2:9], new[1, :, 0:8, 3:10]]))


def test_half_precision_images_keep_float32_states():
    x, g, offsets = _setup()
    xh = x.to(torch.float16)
    m = torch.zeros(x.shape, dtype=torch.float32)
    new, m_new, _, _ = ref.ascent_step(xh, g.float(), offsets, m, None, step=1, lr=0.1)
    assert new.dtype == torch.float16 and m_new.dtype == torch.float32
    exact, _, _, _ = ref.ascent_step(x, g, offsets, torch.zeros_like(x), None, step=1, lr=0.1)
    assert torch.allclose(new.double(), exact, atol=2e-2)


def test_unknown_optimizer_is_an_error():
    x, g, offsets = _setup()
    with pytest.raises(ValueError, match="optimizer"):
        ref.ascent_step(x, g, offsets, torch.zeros_like(x), None, step=1, lr=0.1, optimizer="rmsprop")
