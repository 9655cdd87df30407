"""The E3D module: shapes, timm API, features, stochastic depth, checkpointing, exactness of blocks."""
from __future__ import annotations

import pytest
import timm
import torch

import e3d_zoo
from e3d_zoo import ArchError, WeightsError
from e3d_zoo.model import ResidualK1DWK1


def test_timm_registry_and_factory_agree():
    assert set(timm.list_models("e3d*")) >= {"e3d_s", "e3d_m", "e3d_l"}
    assert e3d_zoo.list_models() == ["e3d_l", "e3d_m", "e3d_s"]
    a = timm.create_model("e3d_s", num_classes=10)
    b = e3d_zoo.create_model("e3d_s", num_classes=10)
    assert type(a) is type(b)
    assert a.state_dict().keys() == b.state_dict().keys()


def test_pretrained_cfg_carries_clip_and_preprocessing():
    cfg = e3d_zoo.create_model("e3d_s").pretrained_cfg
    assert cfg["num_frames"] == 13 and cfg["input_size"] == (3, 160, 160)
    assert len(cfg["mean"]) == 3 and len(cfg["std"]) == 3
    assert cfg["num_classes"] == 400
    # no published weights, so no class names (timm leaves unset fields out of the dict)
    assert cfg.get("label_names") is None
    assert cfg["hf_hub_id"] == "e3d-zoo/e3d_s"


def test_pretrained_without_published_weights_raises_clearly(monkeypatch, tmp_path):
    # Offline mode: the machine cannot reach the Hub, and huggingface_hub would retry for ~20 s.
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(WeightsError, match="e3d-zoo/e3d_s") as info:
        e3d_zoo.create_model("e3d_s", pretrained=True)
    assert "e3d-train" in str(info.value) and "e3d-zoo push" in str(info.value)


def test_create_from_arch_file(tiny_arch_file, tiny_spec):
    m = e3d_zoo.create_model(str(tiny_arch_file), num_classes=5)
    assert m.spec.key() == tiny_spec.key()
    assert m.pretrained_cfg["num_frames"] == tiny_spec.frames
    assert m(torch.randn(1, 3, 4, 32, 32)).shape == (1, 5)


def test_unknown_model_name():
    with pytest.raises(e3d_zoo.ModelNotFoundError, match="unknown model 'e3d_xxl'"):
        e3d_zoo.create_model("e3d_xxl")


@pytest.mark.parametrize("frames, h, w", [(1, 32, 32), (4, 32, 48), (5, 33, 47), (2, 17, 19)])
def test_any_clip_shape_the_strides_allow(tiny_spec, frames, h, w):
    m = e3d_zoo.create_model(tiny_spec, num_classes=3).eval()
    assert m(torch.randn(2, 3, frames, h, w)).shape == (2, 3)


def test_bad_input_shape_is_named(tiny_spec):
    m = e3d_zoo.create_model(tiny_spec).eval()
    with pytest.raises(ArchError, match=r"expected a clip batch shaped \(N, 3, T, H, W\), found \(1, 3, 32, 32\)"):
        m(torch.randn(1, 3, 32, 32))


def test_timm_head_api(tiny_spec):
    m = e3d_zoo.create_model(tiny_spec, num_classes=6).eval()
    x = torch.randn(2, 3, 4, 32, 32)
    feats = m.forward_features(x)
    assert feats.shape == (2, m.num_features, 4, 2, 2)
    pre = m.forward_head(feats, pre_logits=True)
    assert pre.shape == (2, m.head_hidden_size)
    assert torch.allclose(m.forward_head(feats), m.get_classifier()(pre))
    m.reset_classifier(11)
    assert m(x).shape == (2, 11) and m.num_classes == 11
    m.reset_classifier(0)
    assert m(x).shape == (2, m.head_hidden_size)


def test_features_only_returns_stage_maps(tiny_spec):
    f = e3d_zoo.create_model(tiny_spec, features_only=True, out_indices=(1, 2, 3))
    outs = f(torch.randn(1, 3, 4, 32, 32))
    assert [o.shape[1] for o in outs] == f.feature_info.channels() == [8, 16, 32]
    assert [o.shape[-1] for o in outs] == [8, 4, 2]
    assert f.feature_info.reduction() == [4, 8, 16]


def test_features_only_zoo_model_five_stages():
    f = timm.create_model("e3d_s", features_only=True)
    assert f.feature_info.channels() == [24, 24, 48, 120, 512]


def test_drop_path_only_on_layers_with_shortcut(tiny_spec):
    m = e3d_zoo.create_model(tiny_spec, drop_path_rate=0.3)
    layers = [l for l in m.modules() if isinstance(l, ResidualK1DWK1)]
    for layer in layers:
        if layer.has_shortcut:
            assert layer.drop_path.__class__.__name__ in ("DropPath", "Identity")
        else:
            assert isinstance(layer.drop_path, torch.nn.Identity)
    rates = [getattr(l.drop_path, "drop_prob", 0.0) for l in layers if l.has_shortcut]
    assert max(rates) > 0 and rates == sorted(rates)
    m.train()
    x = torch.randn(2, 3, 4, 32, 32)
    torch.manual_seed(0)
    a = m(x)
    torch.manual_seed(1)
    b = m(x)
    assert not torch.allclose(a, b)  # stochastic in training
    m.eval()
    assert torch.equal(m(x), m(x))


def test_grad_checkpointing_gives_same_gradients(tiny_spec):
    torch.manual_seed(0)
    m = e3d_zoo.create_model(tiny_spec, num_classes=4, drop_rate=0.0)
    x = torch.randn(2, 3, 4, 32, 32)
    m(x).sum().backward()
    g0 = [p.grad.clone() for p in m.parameters()]
    m.zero_grad()
    m.set_grad_checkpointing(True)
    m(x).sum().backward()
    for a, p in zip(g0, m.parameters()):
        assert torch.allclose(a, p.grad, atol=1e-6)


def test_residual_layer_follows_the_reference_rules():
    same_s1 = ResidualK1DWK1(8, 8, 16, 3, 3, 1)
    same_s2 = ResidualK1DWK1(8, 8, 16, 3, 3, 2)
    widen = ResidualK1DWK1(8, 16, 16, 3, 3, 1)
    assert isinstance(same_s1.shortcut, torch.nn.Identity)
    assert isinstance(same_s2.shortcut, torch.nn.AvgPool3d) and same_s2.shortcut.kernel_size == (1, 2, 2)
    assert widen.shortcut is None
    assert same_s2.conv_dw.stride == (1, 2, 2) and same_s2.conv_dw.groups == 16
    # y = relu(branch(x) + avgpool(x)), written out
    same_s2.eval()
    for p in same_s2.parameters():
        torch.nn.init.normal_(p)
    x = torch.randn(1, 8, 3, 10, 10)
    y = same_s2.act1(same_s2.bn1(same_s2.conv_pw(x)))
    y = same_s2.act2(same_s2.bn2(same_s2.conv_dw(y)))
    y = same_s2.bn3(same_s2.conv_pwl(y))
    expected = torch.relu(y + torch.nn.functional.avg_pool3d(x, (1, 2, 2)))
    assert torch.allclose(same_s2(x), expected, atol=1e-5)


def test_head_is_pool_linear_swish_dropout_linear():
    m = e3d_zoo.create_model("e3d_s", num_classes=400)
    assert (m.head_fc.in_features, m.head_fc.out_features) == (512, 2048)
    assert isinstance(m.head_act, torch.nn.SiLU)
    assert m.head_drop.p == 0.2
    assert (m.classifier.in_features, m.classifier.out_features) == (2048, 400)
