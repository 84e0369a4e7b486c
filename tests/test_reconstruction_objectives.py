"""Activation-maximization objectives: values per image, combinations, strings, validation."""
import pytest
import torch

from featvis_fast.reconstruction.objectives import (
    Channel,
    ClassLogit,
    DeepDream,
    Direction,
    Diversity,
    Neuron,
    Sum,
    parse,
)


def _acts(n=4):
    gen = torch.Generator().manual_seed(0)
    return {"a": torch.randn(n, 5, 6, 7, generator=gen), "b": torch.randn(n, 3, 4, 4, generator=gen)}, \
        torch.randn(n, 10, generator=gen)


def test_each_objective_computes_its_definition():
    acts, out = _acts()
    a = acts["a"]
    assert torch.allclose(Channel("a", 2)(acts, out), a[:, 2].mean(dim=(1, 2)))
    per = torch.tensor([0, 4, 1, 1])
    assert torch.allclose(Channel("a", per)(acts, out), torch.stack([a[i, c].mean() for i, c in enumerate(per)]))
    assert torch.allclose(Neuron("a", 3, (1, 2))(acts, out), a[:, 3, 1, 2])
    assert torch.allclose(Neuron("a", 3)(acts, out), a[:, 3, 3, 3])
    assert torch.allclose(DeepDream("a")(acts, out), (a ** 2).mean(dim=(1, 2, 3)))
    assert torch.allclose(ClassLogit(7)(acts, out), out[:, 7])
    v = torch.randn(5)
    assert torch.allclose(Direction("a", v)(acts, out), torch.einsum("nchw,c->nhw", a, v).mean(dim=(1, 2)))


def test_diversity_is_minus_the_mean_gram_cosine_to_the_others():
    acts, out = _acts(n=3)
    flat = acts["b"].reshape(3, 3, -1)
    grams = [(f @ f.T).flatten() for f in flat]
    cos = lambda u, w: (u @ w) / (u.norm() * w.norm())  # noqa: E731
    expected = torch.stack([-(cos(grams[i], grams[(i + 1) % 3]) + cos(grams[i], grams[(i + 2) % 3])) / 2
                            for i in range(3)])
    assert torch.allclose(Diversity("b")(acts, out), expected, atol=1e-6)
    with pytest.raises(ValueError, match="2 or more"):
        Diversity("b")({"b": acts["b"][:1]}, None)


def test_objectives_combine_linearly_and_parse_from_strings():
    acts, out = _acts()
    combo = Channel("a", 1) - 0.5 * DeepDream("b") + 2 * ClassLogit(3)
    expected = Channel("a", 1)(acts, out) - 0.5 * DeepDream("b")(acts, out) + 2 * out[:, 3]
    assert torch.allclose(combo(acts, out), expected)
    assert combo.layers == {"a", "b"} and combo.needs_output
    parsed = parse("a:1 - 0.5*b + 2*class:3")
    assert torch.allclose(parsed(acts, out), expected)
    assert torch.allclose(parse("a:2@1,3")(acts, out), acts["a"][:, 2, 1, 3])
    every = parse("a:*", channels={"a": 5})
    assert every.images == 5
    assert torch.allclose(every({"a": acts["a"].repeat(2, 1, 1, 1)[:5]}, None),
                          torch.stack([acts["a"].repeat(2, 1, 1, 1)[i, i].mean() for i in range(5)]))


@pytest.mark.parametrize("spec,match", [("", "an objective is"), ("a:x", "not an integer"),
                                        ("a:*", "channel count"), ("q*a:1", "weight")])
def test_bad_strings_give_clear_errors(spec, match):
    with pytest.raises(ValueError, match=match):
        parse(spec)


def test_validation_names_what_does_not_exist():
    shapes = {"a": (5, 6, 7)}
    with pytest.raises(ValueError, match="out of range for layer 'a' with 5 channels"):
        Channel("a", 9).validate(shapes, 10)
    with pytest.raises(ValueError, match="outside layer 'a'"):
        Neuron("a", 1, (6, 0)).validate(shapes, 10)
    with pytest.raises(ValueError, match="out of range for an output with 10 classes"):
        ClassLogit(10).validate(shapes, 10)
    with pytest.raises(ValueError, match="must be \\(5,\\)"):
        Direction("a", torch.ones(4)).validate(shapes, 10)
    with pytest.raises(ValueError, match="different batch sizes"):
        Sum([(1.0, Channel("a", torch.arange(3))), (1.0, Channel("a", torch.arange(4)))])


def test_each_on_a_channel_sweep_equals_the_per_image_objectives():
    from featvis_fast.reconstruction.objectives import Each, parse

    acts = {"l": torch.randn(4, 6, 5, 3), "m": torch.randn(4, 2, 5, 3)}
    specs = ["l:1", "l:5", "l:0", "l:5"]
    each = Each([parse(t) for t in specs])
    assert each._sweep is not None  # the vectorized path
    expected = torch.stack([acts["l"][i, int(t[2:])].mean() for i, t in enumerate(specs)])
    assert torch.allclose(each(acts, None), expected, atol=1e-6)
    mixed = Each([parse("l:1"), parse("m:1"), parse("2*l:0"), parse("l:3@1,1")])
    assert mixed._sweep is None
    assert torch.allclose(mixed(acts, None), torch.stack([acts["l"][0, 1].mean(), acts["m"][1, 1].mean(),
                                                          2 * acts["l"][2, 0].mean(), acts["l"][3, 3, 1, 1]]))
