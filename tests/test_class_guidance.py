"""Class guidance with a classifier on x0_hat; the shipped MNIST classifier for real."""

from __future__ import annotations

import pytest
import torch

import constrained_diffusion as cd


def test_loss_is_cross_entropy_and_has_the_right_gradient():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3)).double()
    guide = cd.ClassGuidance(net, [2, 0])
    x = torch.randn(2, 1, 4, 4, dtype=torch.float64, requires_grad=True)
    expected = torch.nn.functional.cross_entropy(net(x), torch.tensor([2, 0]), reduction="none")
    assert torch.allclose(guide.loss(x), expected)
    assert torch.autograd.gradcheck(lambda v: guide.loss(v), (x,))
    assert guide.batch_size == 2 and cd.ClassGuidance(net, 1).batch_size is None
    assert not any(p.requires_grad for p in net.parameters())


def test_bad_labels_and_classifiers_are_named():
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    with pytest.raises(ValueError, match="labels"):
        cd.ClassGuidance(net, -1)
    with pytest.raises(ValueError, match="labels"):
        cd.ClassGuidance(net, 1.5)
    with pytest.raises(ValueError, match="labels must be < 3"):
        cd.ClassGuidance(net, 7).validate((1, 4, 4))
    with pytest.raises(ValueError, match="cannot be applied"):
        cd.ClassGuidance(net, 1).validate((1, 5, 5))
    with pytest.raises(TypeError, match="classifier"):
        cd.ClassGuidance(lambda x: x, 1)  # type: ignore[arg-type]


def test_mnist_class_guidance_makes_the_shipped_classifier_read_the_label():
    model = cd.MNISTDenoiser.pretrained("ddpm")
    classifier = cd.models.mnist_classifier()
    guide = cd.constraints.load("mnist-class", label=3)
    gens = [torch.Generator().manual_seed(i) for i in range(4)]
    free = cd.ConstrainedSampler(model, steps=10, inner_steps=0).sample(None, generator=gens, progress=False)
    gens = [torch.Generator().manual_seed(i) for i in range(4)]
    fit = cd.ConstrainedSampler(model, steps=10, inner_steps=5, residual_tol=0.1).sample(guide, generator=gens, progress=False)
    with torch.no_grad():
        read = classifier(fit.images.clamp(-1, 1)).argmax(dim=1)
        before = classifier(free.images.clamp(-1, 1)).argmax(dim=1)
    assert int((read == 3).sum()) >= 3 and int((read == 3).sum()) > int((before == 3).sum())
    assert float(fit.images.abs().max()) < 3.0  # no adversarial values far outside [-1, 1]
