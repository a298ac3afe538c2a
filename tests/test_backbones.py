"""Paper-scale backbones (R3D-18, R(2+1)D-18, ResNet-18 spectrogram stem) and user weights files."""

import pytest
import torch
from torchvision.models import resnet18
from torchvision.models.video import r3d_18

from privkd.errors import ConfigError
from privkd.models.backbones import PairMaxPool1d, build_backbone, load_backbone_weights


@pytest.mark.parametrize("name", ["r3d_18", "r2plus1d_18"])
def test_video_backbones_give_one_token_per_eight_frames(name):
    torch.manual_seed(0)
    net = build_backbone(name, (3, 16, 32, 32)).eval()
    with torch.no_grad():
        assert net(torch.rand(2, 3, 16, 32, 32)).shape == (2, 2, 512)
        assert net(torch.rand(1, 3, 4, 32, 32)).shape == (1, 1, 512)


def test_spectrogram_resnet_takes_one_channel_and_keeps_the_time_axis():
    net = build_backbone("resnet18", (1, 64, 107)).eval()
    assert net.body[0].in_channels == 1
    with torch.no_grad():
        assert net(torch.randn(2, 1, 64, 107)).shape == (2, 4, 512)  # 107 columns / 32, rounded up


def test_wrong_rank_is_refused_with_the_expected_layout():
    with pytest.raises(ValueError, match=r"\(3, frames, height, width\)"):
        build_backbone("r3d_18", (1, 64, 107))


def test_imagenet_resnet_weights_load_into_the_one_channel_stem(tmp_path):
    torch.manual_seed(1)
    source = resnet18(weights=None)
    path = tmp_path / "resnet18.pt"
    torch.save(source.state_dict(), path)
    net = build_backbone("resnet18", (1, 64, 107))
    load_backbone_weights(net, path, "model.backbone_weights.audio")
    torch.testing.assert_close(net.body[0].weight, source.conv1.weight.sum(dim=1, keepdim=True))
    torch.testing.assert_close(net.body[4][0].conv1.weight, source.layer1[0].conv1.weight)


def test_video_weights_load_and_the_classifier_is_ignored(tmp_path):
    source = r3d_18(weights=None, num_classes=400)
    path = tmp_path / "r3d.pt"
    torch.save({"state_dict": source.state_dict()}, path)
    net = build_backbone("r3d_18", (3, 8, 32, 32))
    load_backbone_weights(net, path, "model.backbone_weights.video")
    torch.testing.assert_close(net.layer4[1].conv2[0].weight, source.layer4[1].conv2[0].weight)


def test_weights_of_another_architecture_are_refused_naming_the_key(tmp_path):
    path = tmp_path / "resnet.pt"
    torch.save(resnet18(weights=None).state_dict(), path)
    with pytest.raises(ConfigError, match="model.backbone_weights.video.*does not fit"):
        load_backbone_weights(build_backbone("r3d_18", (3, 8, 32, 32)), path, "model.backbone_weights.video")
    with pytest.raises(ConfigError, match="does not exist"):
        load_backbone_weights(build_backbone("r3d_18", (3, 8, 32, 32)), tmp_path / "nope.pt", "model.backbone_weights.video")


@pytest.mark.parametrize("length", [100, 51, 1])
def test_pair_max_pool_equals_max_pool_in_values_and_gradient(length):
    """Ties included (the zeros a ReLU leaves, and repeated positives): the gradient goes to the
    first of tied values, as ``max_pool1d``'s does, so training is bit-identical."""
    gen = torch.Generator().manual_seed(length)
    x = torch.relu(torch.randn(8, 5, length, generator=gen))
    x[..., 1::4] = x[..., 0::4][..., : x[..., 1::4].shape[-1]]  # positive ties
    x.requires_grad_(True)
    reference, pairs = torch.nn.MaxPool1d(2, ceil_mode=True)(x), PairMaxPool1d()(x)
    assert torch.equal(reference, pairs)
    upstream = torch.randn(reference.shape, generator=gen)
    (expected,), (got,) = torch.autograd.grad(reference, x, upstream), torch.autograd.grad(pairs, x, upstream)
    assert torch.equal(expected, got)
    with torch.no_grad():  # inference takes the plain elementwise maximum
        assert torch.equal(PairMaxPool1d()(x), reference)
