"""Network composition, standardisation, MMD and the student's initialisation from the teacher."""

import numpy as np
import pytest
import torch

from privkd.losses.mmd import gaussian_mmd2
from privkd.models.backbones import Standardize, build_backbone
from privkd.models.network import ModalitySpec, PrivilegedNet


def make_net(seen, fused, tnet=False):
    specs = [ModalitySpec(name, (3, 100), "signal_cnn") for name in seen]
    return PrivilegedNet(
        specs, fused, 7, embed_dim=16, fusion="concat", fusion_dim=32, dropout=0.0,
        tnet_inputs=["acc"] if tnet else (), tnet_outputs=["gyro"] if tnet else (),
    )


def test_student_fuses_hallucinated_privileged_embedding():
    torch.manual_seed(0)
    student = make_net(["acc"], ["acc", "gyro"], tnet=True).eval()
    x = {"acc": torch.randn(5, 3, 100)}
    out = student(x)
    assert out.logits.shape == (5, 7) and out.embedding.shape == (5, 32)
    acc = student.encode(x)["acc"]
    expected = student.fusion([acc, student.tnet(acc)])
    torch.testing.assert_close(out.embedding, expected)


def test_teacher_uses_real_privileged_embedding_not_tnet():
    torch.manual_seed(0)
    teacher = make_net(["acc", "gyro"], ["acc", "gyro"], tnet=True).eval()
    x = {"acc": torch.randn(4, 3, 100), "gyro": torch.randn(4, 3, 100)}
    emb = teacher.encode(x)
    torch.testing.assert_close(teacher(x).embedding, teacher.fusion([emb["acc"], emb["gyro"]]))


def test_unseen_fused_modality_without_tnet_is_rejected():
    with pytest.raises(ValueError, match="neither seen"):
        make_net(["acc"], ["acc", "gyro"], tnet=False)


def test_student_starts_from_teacher_weights():
    torch.manual_seed(0)
    teacher = make_net(["acc", "gyro"], ["acc", "gyro"], tnet=True).eval()
    student = make_net(["acc"], ["acc", "gyro"], tnet=True).eval()
    student.load_shared_weights(teacher)
    x = {"acc": torch.randn(4, 3, 100)}
    acc = teacher.encode({**x, "gyro": torch.randn(4, 3, 100)})["acc"]
    # The initialised student equals the teacher fed with its own T-Net's hallucination.
    torch.testing.assert_close(student(x).logits, teacher.fuse({"acc": acc, "gyro": teacher.tnet(acc)}).logits)


def test_standardize_fits_per_channel_and_keeps_constant_channels_finite():
    x = torch.randn(200, 3, 50) * torch.tensor([1.0, 5.0, 0.0]).view(1, 3, 1) + torch.tensor([2.0, -1.0, 7.0]).view(1, 3, 1)
    norm = Standardize((3, 50))
    norm.fit(x.split(64))  # streamed in batches
    y = norm(x)
    torch.testing.assert_close(y[:, :2].mean(dim=(0, 2)), torch.zeros(2), atol=1e-5, rtol=0)
    torch.testing.assert_close(y[:, :2].std(dim=(0, 2)), torch.ones(2), atol=1e-4, rtol=0)
    assert torch.isfinite(y).all() and torch.all(y[:, 2] == 0)


def test_signal_cnn_tokens_follow_the_time_axis():
    net = build_backbone("signal_cnn", (3, 100)).eval()
    assert net(torch.randn(2, 3, 100)).shape == (2, 13, 64)  # three ceil-halvings of 100 steps
    assert net(torch.randn(2, 3, 250)).shape == (2, 32, 64)


def test_mmd_matches_independent_numpy_computation():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(6, 3)), rng.normal(loc=0.5, size=(5, 3))
    pooled = np.vstack([x, y])
    d2 = ((pooled[:, None] - pooled[None]) ** 2).sum(-1)
    scale = np.sort(d2.ravel())[(d2.size - 1) // 2]  # torch.median takes the lower middle value
    k = sum(np.exp(-d2 / (2 * bw**2 * scale)) for bw in (0.5, 1.0, 2.0, 4.0))
    expected = k[:6, :6].mean() + k[6:, 6:].mean() - 2 * k[:6, 6:].mean()
    got = gaussian_mmd2(torch.tensor(x), torch.tensor(y))
    assert got.item() == pytest.approx(expected, rel=1e-6)
    assert gaussian_mmd2(torch.tensor(x), torch.tensor(x)).item() == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("fusion", ["concat", "joint_cross_attention", "multimodal_transformer"])
def test_the_joint_embedding_has_no_dropout_the_head_input_has(fusion):
    """The structural losses compare joint embeddings of a student in training mode with a teacher's
    in evaluation mode: the embedding must be the same function in both, while the head still
    sees dropped-out features."""
    torch.manual_seed(0)
    specs = [ModalitySpec(name, (3, 100), "signal_cnn") for name in ("acc", "gyro")]
    net = PrivilegedNet(specs, ["acc", "gyro"], 7, embed_dim=16, fusion=fusion, fusion_dim=32, dropout=0.5, heads=4)
    x = {"acc": torch.randn(6, 3, 100), "gyro": torch.randn(6, 3, 100)}
    net.train()
    for module in net.encoders.modules():  # batch norm in train mode would move the embedding too
        module.eval()
    for name, module in net.fusion.named_children():  # attention blocks' own dropout is not what this is about
        if name != "net":
            module.eval()
    training = net(x)
    evaluation = net.eval()(x)
    torch.testing.assert_close(training.embedding, evaluation.embedding)
    assert not torch.allclose(training.logits, evaluation.logits)
    torch.testing.assert_close(evaluation.logits, net.head(evaluation.embedding))


def test_the_linear_backbone_is_the_feature_vector_itself():
    backbone = build_backbone("linear", (5,))
    x = torch.randn(3, 5)
    assert backbone.width == 5 and not list(backbone.parameters())
    torch.testing.assert_close(backbone(x), x.unsqueeze(1))
