"""Frozen backbones: tokens cached once per (dataset, modality, weights) and training on them
gives exactly what recomputing them every step gives."""

import json

import numpy as np
import torch

from privkd.data import MultimodalDataset
from privkd.models.backbones import build_backbone
from privkd.training import feature_cache
from privkd.training.feature_cache import cache_file, cached_tokens


def test_cache_holds_the_backbone_tokens_and_is_computed_once(watch_path, tmp_path, monkeypatch):
    torch.manual_seed(0)
    backbone = build_backbone("signal_cnn", (3, 100)).eval()
    tokens = cached_tokens(watch_path, "accelerometer", backbone, cache_dir=tmp_path, show_progress=False)
    rows = [0, 17, 4676]
    raw = MultimodalDataset(watch_path, ["accelerometer"], indices=rows, in_memory=True)
    with torch.no_grad():
        expected = backbone(torch.stack([raw[i].inputs["accelerometer"] for i in range(3)]))
    np.testing.assert_allclose(tokens[rows], expected.numpy(), rtol=1e-5, atol=1e-6)

    def fail(*args, **kwargs):
        raise AssertionError("recomputed although cached")

    monkeypatch.setattr(feature_cache, "compute_tokens", fail)
    again = cached_tokens(watch_path, "accelerometer", backbone, cache_dir=tmp_path, show_progress=False)
    np.testing.assert_array_equal(again, tokens)


def test_other_weights_or_modality_get_their_own_cache_file(watch_path, tmp_path):
    torch.manual_seed(0)
    a = build_backbone("signal_cnn", (3, 100))
    b = build_backbone("signal_cnn", (3, 100))
    assert cache_file(watch_path, "accelerometer", a, tmp_path) == cache_file(watch_path, "accelerometer", a, tmp_path)
    assert cache_file(watch_path, "accelerometer", a, tmp_path) != cache_file(watch_path, "accelerometer", b, tmp_path)
    assert cache_file(watch_path, "accelerometer", a, tmp_path) != cache_file(watch_path, "gyroscope", a, tmp_path)


def test_training_on_cached_tokens_equals_recomputing_them(run_config, monkeypatch, tmp_path, watch_path):
    """Baseline, teacher and PKDOT with the accelerometer backbone frozen, one fold, 2 epochs:
    the test metrics agree with and without the cache (same weights, eval-mode backbone). The
    cache is computed in other batch sizes; that float rounding, amplified by training, moved
    PKDOT by 0.006 (5 of 845 test windows), so the bound is 0.02."""
    monkeypatch.setenv("PRIVKD_CACHE", str(tmp_path / "cache"))
    base = {
        "methods": ["baseline", "teacher", "pkdot"],
        "data": {"path": str(watch_path)},
        "evaluation": {"max_folds": 1},
        "training": {"epochs": 2, "progress_bar": False},
        "teacher": {"tnet_refit_epochs": 2},
        "model": {"frozen_backbones": ["accelerometer"]},
    }
    summaries = []
    for cache in (True, False):
        base["model"]["cache_features"] = cache
        result, run_dir = run_config(base)
        assert result.exit_code == 0, result.output
        summaries.append(json.loads((run_dir / "summary.json").read_text())["methods"])
    assert list((tmp_path / "cache" / "features").glob("*-accelerometer-*.npy"))
    for method in ("baseline", "teacher", "pkdot"):
        for metric in ("accuracy", "f1"):
            cached, recomputed = (s[method][metric]["mean"] for s in summaries)
            assert abs(cached - recomputed) < 0.02, (method, metric, cached, recomputed)


def test_a_network_gives_the_same_outputs_from_cached_tokens_as_from_raw_inputs(watch_path):
    from privkd.config.loading import config_from_dict
    from privkd.data import read_info
    from privkd.models.build import build_net, reference_backbone
    from privkd.models.network import TOKENS_SUFFIX

    cfg = config_from_dict({"model": {"frozen_backbones": ["accelerometer"]}})
    info = read_info(watch_path)
    torch.manual_seed(0)
    teacher = build_net("teacher", cfg, info).eval()
    assert not any(p.requires_grad for p in teacher.encoders["accelerometer"].backbone.parameters())
    assert all(p.requires_grad for p in teacher.encoders["accelerometer"].project.parameters())
    rows = MultimodalDataset(watch_path, ["accelerometer", "gyroscope"], indices=range(8), in_memory=True)
    raw = {name: torch.stack([rows[i].inputs[name] for i in range(8)]) for name in ("accelerometer", "gyroscope")}
    with torch.no_grad():
        tokens = reference_backbone(cfg, info, "accelerometer")(raw["accelerometer"])
        cached = teacher({"accelerometer" + TOKENS_SUFFIX: tokens, "gyroscope": raw["gyroscope"]})
        direct = teacher(raw)
    torch.testing.assert_close(cached.logits, direct.logits, rtol=1e-5, atol=1e-5)
