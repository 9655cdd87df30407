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
    m = e3d_zoo.create_model("e3d_s")
    cfg = m.pretrained_cfg
    assert m.default_cfg is cfg  # updated in place, never replaced
    assert cfg["num_frames"] == 13 and cfg["frame_stride"] == 2 and cfg["input_layout"] == "NCTHW"
    assert cfg["input_size"] == (3, 160, 160) and cfg["pool_size"] == (5, 5)
    assert cfg["min_input_size"] == (3, 32, 32) and cfg["first_conv"] == "blocks.0.conv"
    assert len(cfg["mean"]) == 3 and len(cfg["std"]) == 3 and cfg["num_classes"] == 400
    assert m.forward_features(torch.randn(1, 3, 2, 160, 160)).shape[-2:] == cfg["pool_size"]
    assert timm.create_model("e3d_l").pretrained_cfg["pool_size"] == (10, 10)  # 312 -> ... -> 20 -> 10
    # no published weights, so no class names (timm leaves unset fields out of the dict)
    assert cfg.get("label_names") is None
    f = e3d_zoo.create_model("e3d_s", features_only=True)
    assert f.default_cfg is f.pretrained_cfg and f.pretrained_cfg["num_frames"] == 13


def test_registry_claims_no_unpublished_weights():
    assert timm.list_pretrained("e3d*") == []
    assert not any(timm.models.is_model_pretrained(n) for n in ("e3d_s", "e3d_m", "e3d_l"))
    assert "hf_hub_id" not in e3d_zoo.create_model("e3d_s").pretrained_cfg


def test_pretrained_without_published_weights_raises_clearly():
    for create in (e3d_zoo.create_model, timm.create_model):
        with pytest.raises(WeightsError, match=r"e3d_s: no pretrained weights are published") as info:
            create("e3d_s", pretrained=True)
        assert "hf_hub_id" in str(info.value) and "e3d-train" in str(info.value)


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


def test_global_pool_empty_keeps_the_map_and_applies_the_head_per_position(tiny_spec):
    torch.manual_seed(0)
    m = e3d_zoo.create_model(tiny_spec, num_classes=6).eval()
    x = torch.randn(2, 3, 4, 32, 32)
    feats = m.forward_features(x)
    m.reset_classifier(0, "")
    out = m(x)
    assert out.shape == (2, m.head_hidden_size, 4, 2, 2)
    assert torch.allclose(out[:, :, 1, 0, 1], m.head_act(m.head_fc(feats[:, :, 1, 0, 1])), atol=1e-6)
    dense = e3d_zoo.create_model(tiny_spec, num_classes=6, global_pool="").eval()
    assert dense(x).shape == (2, 6, 4, 2, 2)
    dense.reset_classifier(6, "avg")
    assert dense(x).shape == (2, 6)
    with pytest.raises(ArchError, match=r"global_pool: expected 'avg' or ''"):
        e3d_zoo.create_model(tiny_spec, global_pool="max")


def test_reset_classifier_follows_device_dtype_and_mode(tiny_spec):
    m = e3d_zoo.create_model(tiny_spec).to(torch.float64).eval()
    m.reset_classifier(3)
    assert m.classifier.weight.dtype == torch.float64 and not m.classifier.training
    assert m(torch.randn(1, 3, 4, 32, 32, dtype=torch.float64)).shape == (1, 3)


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


def test_forward_intermediates_formats_checkpointing_and_stop_early(tiny_spec):
    torch.manual_seed(0)
    m = e3d_zoo.create_model(tiny_spec).eval()
    x = torch.randn(1, 3, 4, 32, 32)
    final, feats = m.forward_intermediates(x)
    assert torch.equal(final, m.forward_features(x)) and len(feats) == 4
    _, last = m.forward_intermediates(x, output_fmt="NTHWC")
    assert all(torch.equal(a.permute(0, 4, 1, 2, 3), b) for a, b in zip(last, feats))
    _, via_timm_name = m.forward_intermediates(x, output_fmt="NCHW")  # timm wrappers' default
    assert all(torch.equal(a, b) for a, b in zip(via_timm_name, feats))
    early = m.forward_intermediates(x, indices=[1], stop_early=True, intermediates_only=True)
    assert torch.equal(early[0], feats[1])
    m.set_grad_checkpointing(True)
    m.train()
    y, inter = m.forward_intermediates(x, indices=2)
    sum(t.sum() for t in inter).backward()
    assert len(inter) == 2 and m.blocks[0].conv.weight.grad is not None
    with pytest.raises(ArchError, match="output_fmt: expected one of"):
        m.forward_intermediates(x, output_fmt="NLC")


@pytest.mark.parametrize("feature_cls", ["getter", "list", "dict", "hook", "fx"])
def test_every_timm_feature_wrapper_gives_the_stage_maps(tiny_spec, feature_cls):
    x = torch.randn(1, 3, 4, 32, 32)
    torch.manual_seed(0)
    expected = e3d_zoo.create_model(tiny_spec).eval().forward_intermediates(
        x, indices=[1, 3], intermediates_only=True)
    torch.manual_seed(0)  # the same initial weights: the wrapper is built around a full model
    f = e3d_zoo.create_model(tiny_spec, features_only=True, out_indices=(1, 3), feature_cls=feature_cls)
    out = f.eval()(x)
    out = list(out.values()) if isinstance(out, dict) else out
    assert f.feature_info.channels() == [8, 32] and f.feature_info.reduction() == [4, 16]
    assert len(out) == 2 and all(torch.equal(a, b) for a, b in zip(out, expected))


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
