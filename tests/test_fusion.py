"""Fusion modules: joint cross-attention against the paper's equations, and batch independence."""

import numpy as np
import pytest
import torch

from privkd.models.fusion import FUSION_NAMES, JointCrossAttentionFusion, build_fusion
from privkd.models.network import ModalitySpec, PrivilegedNet


def test_joint_cross_attention_matches_the_papers_equations_in_feature_by_token_notation():
    """Praveen et al. write X_m as (d_m × L) matrices; recompute Eqs. 1-6 that way in numpy."""
    torch.manual_seed(0)
    dim, tokens, batch = 6, 5, 3
    fusion = JointCrossAttentionFusion(2, dim, 4, dropout=0.0, tokens=tokens, hidden=7).eval()
    xs = [torch.randn(batch, tokens, dim) for _ in range(2)]
    attended = fusion.attend(xs)
    d = 2 * dim
    for b in range(batch):
        X = [x[b].numpy().T for x in xs]  # (d_m, L)
        J = np.concatenate(X, axis=0)  # (d, L)
        for m in range(2):
            W_j = fusion.joint_weights[m].detach().numpy()  # (d_m, d)
            W_m = fusion.feature_maps[m].weight.detach().numpy()  # (k, d_m)
            W_c = fusion.correlation_maps[m].weight.detach().numpy()  # (k, L)
            W_h = fusion.output_maps[m].weight.detach().numpy()  # (d_m, k)
            C = np.tanh(X[m].T @ W_j @ J / np.sqrt(d))  # (L, L)
            H = np.maximum(W_m @ X[m] + W_c @ C.T, 0.0)  # (k, L)
            expected = W_h @ H + X[m]  # (d_m, L)
            np.testing.assert_allclose(attended[m][b].detach().numpy().T, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", FUSION_NAMES)
def test_one_samples_fused_output_ignores_the_rest_of_its_batch(name):
    """The authors' transformer attended across the batch; ours must not (eval mode, no dropout)."""
    torch.manual_seed(0)
    fusion = build_fusion(name, 2, 16, 8, dropout=0.0, tokens=4, heads=4).eval()
    xs = [torch.randn(6, 4, 16) for _ in range(2)]
    changed = [x.clone() for x in xs]
    for x in changed:
        x[1:] = torch.randn_like(x[1:]) * 3  # every other sample replaced
    with torch.no_grad():
        full, other = fusion(xs), fusion(changed)
        alone = fusion([x[:1] for x in xs])
    torch.testing.assert_close(full[0], other[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(full[0], alone[0], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(full[1:], other[1:])  # the changed samples' outputs did change


@pytest.mark.parametrize("name", FUSION_NAMES[1:])
def test_attention_fusion_uses_the_token_order_and_every_modality(name):
    torch.manual_seed(0)
    fusion = build_fusion(name, 2, 16, 8, dropout=0.0, tokens=4, heads=4).eval()
    xs = [torch.randn(3, 4, 16, requires_grad=True) for _ in range(2)]
    out = fusion(xs)
    out.sum().backward()
    assert all(x.grad is not None and x.grad.abs().sum() > 0 for x in xs)
    with torch.no_grad():
        reversed_tokens = fusion([x.flip(1) for x in xs])
    assert not torch.allclose(out, reversed_tokens)  # not a bag of tokens


def test_multimodal_transformer_fuses_a_single_modality():
    fusion = build_fusion("multimodal_transformer", 1, 16, 8, dropout=0.0, tokens=3, heads=4).eval()
    assert fusion([torch.randn(2, 3, 16)]).shape == (2, 8)


@pytest.mark.parametrize("fusion", FUSION_NAMES)
def test_whole_network_predictions_are_batch_independent(fusion):
    """Backbones in eval mode, token pooling, T-Net and fusion: sample 0 is alone in its world."""
    torch.manual_seed(0)
    specs = [ModalitySpec("acc", (3, 64), "signal_cnn")]
    student = PrivilegedNet(specs, ["acc", "gyro"], 5, embed_dim=16, fusion=fusion, fusion_dim=8, dropout=0.0,
                            tnet_inputs=["acc"], tnet_outputs=["gyro"], tokens=4, heads=4).eval()
    x = torch.randn(5, 3, 64)
    y = x.clone()
    y[1:] = torch.randn_like(y[1:])
    with torch.no_grad():
        torch.testing.assert_close(student({"acc": x}).logits[0], student({"acc": y}).logits[0], rtol=1e-5, atol=1e-6)


def test_tokens_are_pooled_to_the_common_grid_and_hallucinated_step_by_step():
    torch.manual_seed(0)
    specs = [ModalitySpec("acc", (3, 64), "signal_cnn")]
    student = PrivilegedNet(specs, ["acc", "gyro"], 5, embed_dim=16, fusion="joint_cross_attention", fusion_dim=8,
                            dropout=0.0, tnet_inputs=["acc"], tnet_outputs=["gyro"], tokens=4).eval()
    x = {"acc": torch.randn(2, 3, 64)}
    with torch.no_grad():
        acc = student.encode(x)["acc"]
        raw = student.encoders["acc"](x["acc"])  # 8 tokens after three halvings of 64 steps
        gyro = student.hallucinate({"acc": acc})["gyro"]
    assert raw.shape == (2, 8, 16) and acc.shape == (2, 4, 16)
    torch.testing.assert_close(acc, raw.reshape(2, 4, 2, 16).mean(dim=2))
    torch.testing.assert_close(gyro[:, 2], student.tnet(acc[:, 2]))
