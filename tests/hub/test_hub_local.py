"""Save-pretrained folders and checkpoint files, without any server."""
from __future__ import annotations

import json
import os
import re

import pytest
import torch

from e3d_zoo import create_model
from e3d_zoo.errors import WeightsError
from e3d_zoo.hub import (apply_state_dict, from_pretrained, load_pretrained_weights, load_weights,
                         read_state_dict, save_pretrained)

from tiny_arch import make_tiny_spec


@pytest.fixture
def tiny_model():
    torch.manual_seed(0)
    return create_model(make_tiny_spec(), num_classes=5).eval()


@pytest.fixture
def clip():
    return torch.randn(2, 3, 4, 32, 32, generator=torch.Generator().manual_seed(1))


def test_save_pretrained_folder_round_trips(tiny_model, clip, tmp_path):
    folder = save_pretrained(tiny_model, tmp_path / "m", label_names=list("abcde"),
                             metrics={"val_top1": 91.5}, repo_id="org/tiny")
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    config = json.loads((folder / "config.json").read_text())
    assert config["model_args"]["spec"]["blocks"] == make_tiny_spec().to_dict()["blocks"]
    assert config["architecture"] == "e3d_s" and config["num_classes"] == 5
    assert config["model_args"]["video_cfg"] == {"num_frames": 4, "frame_stride": 2, "input_layout": "NCTHW"}
    # only timm's PretrainedCfg fields: timm's own loader builds PretrainedCfg(**pretrained_cfg)
    from timm.models import PretrainedCfg

    assert PretrainedCfg(**config["pretrained_cfg"]).pool_size == [2, 2]
    card = (folder / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: e3d-zoo")
    assert "| val_top1 | 91.5 |" in card and "## Intended use" in card
    assert "create_model('hf-hub:org/tiny', pretrained=True)" in card
    loaded = from_pretrained(folder).eval()
    assert torch.equal(loaded(clip), tiny_model(clip))
    assert loaded.pretrained_cfg["label_names"] == list("abcde")
    # the weights file alone, into a model built by the caller
    other = create_model(make_tiny_spec(), num_classes=5).eval()
    load_weights(other, folder / "model.safetensors")
    assert torch.equal(other(clip), tiny_model(clip))


def test_changed_num_classes_reinitialises_the_head_with_a_warning(tiny_model, tmp_path):
    save_pretrained(tiny_model, tmp_path / "m")
    with pytest.warns(UserWarning, match="classifier has 5 classes, the model 3; the classifier was re-initialised"):
        model = from_pretrained(tmp_path / "m", num_classes=3)
    assert model.classifier.out_features == 3
    assert torch.equal(model.state_dict()["head_fc.weight"], tiny_model.state_dict()["head_fc.weight"])
    assert "label_names" not in model.pretrained_cfg


def test_weights_for_another_architecture_list_the_mismatches(tiny_model, tmp_path):
    save_pretrained(tiny_model, tmp_path / "m")
    wider = create_model(make_tiny_spec(head_hidden=32), num_classes=5)
    with pytest.raises(WeightsError, match=r"do not fit this architecture.*head_fc\.weight \(64, 32\) in the "
                                           r"weights vs \(32, 32\) in the model"):
        load_weights(wider, tmp_path / "m")
    state = dict(tiny_model.state_dict())
    state["blocks.9.conv.weight"] = torch.zeros(1)
    del state["blocks.1.0.bn1.weight"]
    with pytest.raises(WeightsError, match=r"missing keys: \['blocks.1.0.bn1.weight'\].*unexpected keys: "
                                           r"\['blocks.9.conv.weight'\]"):
        apply_state_dict(create_model(make_tiny_spec(), num_classes=5), state, "test")


def test_corrupted_safetensors_is_a_clear_error(tiny_model, tmp_path):
    folder = save_pretrained(tiny_model, tmp_path / "m")
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match=r"model.safetensors: corrupted or not a safetensors file"):
        from_pretrained(folder)
    (folder / "model.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(WeightsError, match="corrupted"):
        read_state_dict(folder / "model.safetensors")


def test_pickle_checkpoints_load_only_with_weights_only(tiny_model, clip, tmp_path):
    torch.save({"state_dict": tiny_model.state_dict(), "epoch": 3}, tmp_path / "plain.pth")
    model = create_model(make_tiny_spec(), num_classes=5).eval()
    load_weights(model, tmp_path / "plain.pth")
    assert torch.equal(model(clip), tiny_model(clip))

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo should-not-run",))

    torch.save({"state_dict": tiny_model.state_dict(), "hook": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(WeightsError, match=r"evil.pth: refused to unpickle.*weights_only=True"):
        load_weights(model, tmp_path / "evil.pth")


def _reference_key(ours: str) -> str:
    """Our key -> the reference Cnn3DNet's (block_list / convN.conv1 / bnN / fc_linear)."""
    m = re.fullmatch(r"blocks\.(\d+)\.(conv|bn)\.(.+)", ours)
    if m:
        return f"block_list.{m[1]}.{m[2]}1.{m[3]}"
    m = re.fullmatch(r"blocks\.(\d+)\.(\d+)\.(conv_pw|conv_dw|conv_pwl|bn1|bn2|bn3)\.(.+)", ours)
    if m:
        unit, part = {"conv_pw": ("conv1", "conv1"), "bn1": ("conv1", "bn1"), "conv_dw": ("conv2", "conv1"),
                      "bn2": ("conv2", "bn1"), "conv_pwl": ("conv3", "conv1"), "bn3": ("conv3", "bn1")}[m[3]]
        return f"block_list.{m[1]}.block_list.{m[2]}.{unit}.{part}.{m[4]}"
    return {"head_fc.weight": "fc_linear.0.weight", "head_fc.bias": "fc_linear.0.bias",
            "classifier.weight": "fc_linear.3.weight", "classifier.bias": "fc_linear.3.bias"}[ours]


def test_reference_implementation_checkpoints_are_imported(tiny_model, clip, tmp_path):
    ref_state = {"module." + _reference_key(k): v for k, v in tiny_model.state_dict().items()}
    assert "module.block_list.2.block_list.1.conv2.conv1.weight" in ref_state
    torch.save({"state_dict": ref_state}, tmp_path / "reference.pth")
    model = create_model(make_tiny_spec(), num_classes=5).eval()
    load_weights(model, tmp_path / "reference.pth")
    assert torch.equal(model(clip), tiny_model(clip))


def test_registered_tag_without_weights_names_the_repo_and_the_way_out(tmp_path):
    model = create_model(make_tiny_spec(), num_classes=5)
    with pytest.raises(WeightsError, match=r"no pretrained weights are published.*e3d-train.*e3d-zoo push"):
        load_pretrained_weights(model, {"hf_hub_id": None})
    with pytest.raises(WeightsError, match="does not exist"):
        load_pretrained_weights(model, {"file": str(tmp_path / "nothing.safetensors")})


def test_not_a_folder_nor_a_hub_id(tmp_path):
    with pytest.raises(WeightsError, match="no such file or folder"):
        load_weights(create_model(make_tiny_spec(), num_classes=5), str(tmp_path / "missing.bin"))
    with pytest.raises(WeightsError, match="no such file or folder"):
        from_pretrained(str(tmp_path / "runs" / "model"))


# ---- timm's own loader: timm.create_model("local-dir:FOLDER") -------------------------

def _trained_like(seed=0, **spec_kw):
    from tiny_arch import tiny_model

    model = tiny_model(num_classes=5, seed=seed, **spec_kw).eval()
    model.pretrained_cfg["frame_stride"] = 1  # as e3d-train records it for consecutive frames
    return model


def test_timm_local_dir_loads_our_folder_with_identical_outputs(tmp_path, clip):
    import timm

    import e3d_zoo

    model = _trained_like()
    folder = save_pretrained(model, tmp_path / "m", label_names=list("abcde"))
    with torch.no_grad():
        expected = model(clip)
    for build in (lambda: timm.create_model(f"local-dir:{folder}", pretrained=True),
                  lambda: e3d_zoo.create_model(f"local-dir:{folder}", pretrained=True),
                  lambda: e3d_zoo.create_model(folder, pretrained=True),
                  lambda: from_pretrained(folder)):
        loaded = build().eval()
        with torch.no_grad():
            assert torch.equal(loaded(clip), expected)
        cfg = loaded.pretrained_cfg
        assert loaded.default_cfg is cfg
        assert (cfg["num_frames"], cfg["frame_stride"], cfg["input_layout"]) == (4, 1, "NCTHW")
        assert cfg["label_names"] == list("abcde") and loaded.spec.key() == model.spec.key()
    # without weights: the same architecture, fresh parameters
    fresh = timm.create_model(f"local-dir:{folder}")
    assert fresh.spec.key() == model.spec.key() and not torch.equal(
        fresh.state_dict()["blocks.0.conv.weight"], model.state_dict()["blocks.0.conv.weight"])


def test_features_only_with_pretrained_loads_the_full_checkpoint_first(tmp_path, clip):
    import timm

    model = _trained_like(seed=1)
    folder = save_pretrained(model, tmp_path / "m")
    expected = model.forward_intermediates(clip, intermediates_only=True)
    for feature_cls in ("getter", "list"):
        f = timm.create_model(f"local-dir:{folder}", pretrained=True, features_only=True,
                              feature_cls=feature_cls).eval()
        with torch.no_grad():
            out = f(clip)
        assert len(out) == len(expected) and all(torch.equal(a, b) for a, b in zip(out, expected))


def test_in_chans_adapts_the_first_conv_of_pretrained_weights(tmp_path):
    import e3d_zoo

    model = _trained_like(seed=2)
    folder = save_pretrained(model, tmp_path / "m")
    gray = torch.randn(2, 1, 4, 32, 32, generator=torch.Generator().manual_seed(3))
    one = e3d_zoo.create_model(f"local-dir:{folder}", pretrained=True, in_chans=1).eval()
    assert one.blocks[0].conv.in_channels == 1 and one.spec.in_chans == 1
    with torch.no_grad():
        # one channel: the RGB filters summed, so a gray clip gives what RGB = (g, g, g) gives
        assert torch.allclose(one(gray), model(gray.expand(-1, 3, -1, -1, -1)), atol=1e-5)
    two = e3d_zoo.create_model(f"local-dir:{folder}", pretrained=True, in_chans=2)  # optical flow
    w3, w2 = model.blocks[0].conv.weight, two.blocks[0].conv.weight
    assert w2.shape[1] == 2 and torch.allclose(w2, w3[:, :2] * 3 / 2)  # timm: repeat, scale 3/2
    # saved with one channel, it reloads with one (model_args.in_chans), through timm too
    one_folder = save_pretrained(one, tmp_path / "gray")
    import timm

    again = timm.create_model(f"local-dir:{one_folder}", pretrained=True).eval()
    with torch.no_grad():
        assert torch.equal(again(gray), one(gray))


def test_headless_pretrained_model_drops_the_classifier_silently(tmp_path, clip):
    import warnings

    import e3d_zoo

    model = _trained_like(seed=4)
    folder = save_pretrained(model, tmp_path / "m")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        headless = e3d_zoo.create_model(f"local-dir:{folder}", pretrained=True, num_classes=0).eval()
    with torch.no_grad():
        assert torch.equal(headless(clip), model.forward_head(model.forward_features(clip), pre_logits=True))


def test_format_1_folders_still_load(tmp_path, clip):
    """Folders written before config.json became timm-loadable (clip keys in pretrained_cfg)."""
    model = _trained_like(seed=5)
    folder = save_pretrained(model, tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())
    args = config.pop("model_args")
    config["pretrained_cfg"].update(args["video_cfg"], architecture_spec="e3d_tiny")
    config.update(architecture="e3d_tiny", head_hidden=args["spec"]["head_hidden"],
                  e3d={"format_version": 1, "spec": args["spec"]})
    (folder / "config.json").write_text(json.dumps(config))
    loaded = from_pretrained(folder).eval()
    with torch.no_grad():
        assert torch.equal(loaded(clip), model(clip))
    assert loaded.pretrained_cfg["frame_stride"] == 1


def test_config_problems_are_named(tmp_path):
    folder = save_pretrained(_trained_like(seed=6), tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())
    for edit, needle in [
        (lambda c: c.__setitem__("architecture", "resnet_nope"), "architecture: 'resnet_nope' is not a registered model"),
        (lambda c: c["pretrained_cfg"].__setitem__("num_frames", 4), "pretrained_cfg: unknown key(s) ['num_frames']"),
        (lambda c: c["model_args"]["spec"]["blocks"][1].__setitem__("k", 4), "model_args.spec: blocks[1].k"),
        (lambda c: c["e3d"].__setitem__("format_version", 9), "e3d.format_version 9"),
    ]:
        broken = json.loads(json.dumps(config))
        edit(broken)
        (folder / "config.json").write_text(json.dumps(broken))
        with pytest.raises(WeightsError) as info:
            from_pretrained(folder)
        assert needle in str(info.value) and "config.json" in str(info.value)


def test_unreadable_config_files_are_named(tmp_path):
    from e3d_zoo.hub import MAX_CONFIG_BYTES

    folder = save_pretrained(_trained_like(seed=6), tmp_path / "m")
    cfg = folder / "config.json"
    for content, needle in [
        (b'{"e3d": ', "config.json: not valid JSON: Expecting value at line 1 column 9"),
        (b"[" * 100_000 + b"]" * 100_000, "config.json: not a usable e3d-zoo config: nested too deeply"),
        (b'{"e3d": "caf\xe9"}', "config.json: not UTF-8 text"),
        (b" " * (MAX_CONFIG_BYTES + 1), "an e3d-zoo config may have at most"),
    ]:
        cfg.write_bytes(content)
        with pytest.raises(WeightsError) as info:
            from_pretrained(folder)
        assert needle in str(info.value)


def test_wrapped_or_pruned_models_are_refused_by_save_pretrained(tmp_path):
    import e3d_zoo

    with pytest.raises(WeightsError, match="expected an E3D model"):
        save_pretrained(e3d_zoo.create_model(make_tiny_spec(), features_only=True), tmp_path / "f")
    pruned = e3d_zoo.create_model(make_tiny_spec())
    pruned.prune_intermediate_layers([1])
    with pytest.raises(WeightsError, match="expected a full E3D model"):
        save_pretrained(pruned, tmp_path / "p")
    assert not (tmp_path / "f").exists() and not (tmp_path / "p").exists()
