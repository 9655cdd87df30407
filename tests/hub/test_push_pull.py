"""Push with `e3d-zoo push`, pull in a fresh process with huggingface_hub, over real HTTP.

Download side: olah, a real Hub-compatible mirror server. Upload side:
FakeHubUploadServer, a TEST DOUBLE of the Hub's write API (see hub_servers.py) that
commits into the git repos olah serves. No internet is used.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from e3d_zoo import create_model
from e3d_zoo.hub import save_pretrained

from tiny_arch import make_tiny_spec
from hub_servers import TEST_TOKEN, FakeHubUploadServer, OlahMirror

pytest.importorskip("olah")
REPO = Path(__file__).resolve().parents[2]

PULL = r"""
import json, sys, timm, torch, e3d_zoo
clip_path, sources = sys.argv[1], sys.argv[2:]
clip = torch.load(clip_path, weights_only=True)
outputs, report = {}, {}
for source in sources:
    # "timm::NAME" builds with timm.create_model; "NAME=ORG/REPO" points the registered
    # NAME at a Hub repo, as a published tag's hf_hub_id would
    loader, _, name = source.rpartition("::")
    name, _, repo = name.partition("=")
    create = timm.create_model if loader == "timm" else e3d_zoo.create_model
    kwargs = {"pretrained_cfg_overlay": {"hf_hub_id": repo}} if repo else {}
    try:
        model = create(name, pretrained=True, **kwargs).eval()
    except e3d_zoo.E3DError as exc:
        report[source] = {"error": f"{type(exc).__name__}: {exc}"}
        continue
    with torch.no_grad():
        outputs[source] = model(clip)
    cfg = model.pretrained_cfg
    report[source] = {"error": None, "labels": cfg.get("label_names"),
                      "clip": [cfg.get("num_frames"), cfg.get("frame_stride"), cfg.get("input_layout")]}
torch.save(outputs, clip_path + ".out")
print(json.dumps(report))
"""


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub")
    mirrors = root / "mirrors"
    mirrors.mkdir()
    with FakeHubUploadServer(mirrors) as upload, OlahMirror(mirrors, root / "olah") as mirror:
        yield upload, mirror, root


def _model(seed: int, classes: int = 4):
    torch.manual_seed(seed)
    return create_model(make_tiny_spec(), num_classes=classes).eval()


def _push(folder, repo_id, upload, *extra, token=TEST_TOKEN):
    cmd = [sys.executable, "-m", "e3d_zoo.cli.zoo", "push", str(folder), repo_id, "--endpoint", upload.url,
           "--json", *extra] + (["--token", token] if token else [])
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HF_ENDPOINT")}
    env["HF_HOME"] = str(Path(folder).parent / "push_home")  # no saved login
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=180)


def _pull(sources, mirror, hf_home, clip, offline=False):
    """create_model(source, pretrained=True) for each source, in one fresh interpreter.

    Returns ({source: {"error": ..., "labels": ...}}, {source: output tensor}).
    """
    clip_path = Path(hf_home).parent / f"clip_{abs(hash((tuple(sources), str(hf_home), offline)))}.pt"
    torch.save(clip, clip_path)
    env = {**os.environ, "HF_ENDPOINT": mirror.url, "HF_HOME": str(hf_home), "OMP_NUM_THREADS": "1"}
    env.pop("HF_HUB_OFFLINE", None)
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    res = subprocess.run([sys.executable, "-c", PULL, str(clip_path), *sources], capture_output=True,
                         text=True, env=env, cwd=REPO, timeout=180)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout), torch.load(str(clip_path) + ".out", weights_only=True)


def test_push_then_pull_in_a_fresh_process_gives_identical_outputs(hub, tmp_path):
    upload, mirror, _ = hub
    model = _model(0)
    folder = save_pretrained(model, tmp_path / "model", label_names=["a", "b", "c", "d"])
    res = _push(folder, "e3d-test/tiny-motion", upload, "--message", "first weights")
    assert res.returncode == 0, res.stderr
    pushed = json.loads(res.stdout)
    assert pushed["revision"] == "main" and len(pushed["commit"]) == 40
    assert ("POST", "/api/models/e3d-test/tiny-motion/commit/main") in upload.requests

    clip = torch.randn(1, 3, 4, 32, 32)
    hf_home = tmp_path / "hf_home"
    src = "hf-hub:e3d-test/tiny-motion"
    report, out = _pull([src], mirror, hf_home, clip)
    assert report[src]["error"] is None and report[src]["labels"] == ["a", "b", "c", "d"]
    with torch.no_grad():
        assert torch.equal(out[src], model(clip))
    # huggingface_hub's own cache holds the files, under the pushed commit
    snapshot = hf_home / "hub" / "models--e3d-test--tiny-motion" / "snapshots" / pushed["commit"]
    assert (snapshot / "model.safetensors").read_bytes() == (folder / "model.safetensors").read_bytes()

    # HF_HUB_OFFLINE: the cached copy still loads, an empty cache says why it cannot
    report, out_offline = _pull([src], mirror, hf_home, clip, offline=True)
    assert report[src]["error"] is None and torch.equal(out_offline[src], out[src])
    report, _ = _pull([src], mirror, tmp_path / "empty_home", clip, offline=True)
    assert report[src]["error"].startswith("HubError") and "HF_HUB_OFFLINE is set" in report[src]["error"]


def test_revisions_branches_and_commit_pinning(hub, tmp_path):
    from e3d_zoo.hub import push_to_hub

    upload, mirror, _ = hub
    v1, v2 = _model(1), _model(2)
    r1 = push_to_hub(save_pretrained(v1, tmp_path / "v1"), "e3d-test/versions", endpoint=upload.url, token=TEST_TOKEN)
    r2 = push_to_hub(save_pretrained(v2, tmp_path / "v2"), "e3d-test/versions", revision="v2",
                     endpoint=upload.url, token=TEST_TOKEN)
    assert r2["revision"] == "v2" and r1["commit"] != r2["commit"]
    clip = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():
        ref1, ref2 = v1(clip), v2(clip)
    main, branch, pinned = ("hf-hub:e3d-test/versions", "hf-hub:e3d-test/versions@v2",
                            f"hf-hub:e3d-test/versions@{r1['commit']}")
    report, out = _pull([main, branch, pinned], mirror, tmp_path / "hf_home", clip)
    assert all(r["error"] is None for r in report.values()), report
    assert torch.equal(out[main], ref1) and torch.equal(out[pinned], ref1)
    assert torch.equal(out[branch], ref2) and not torch.equal(ref1, ref2)


def test_registered_model_loads_from_an_hf_hub_id(hub, tmp_path):
    """A tag's hf_hub_id (here given by pretrained_cfg_overlay, as a published tag would
    carry it) fetches that repo, with e3d_zoo's factory and timm's."""
    from e3d_zoo.hub import push_to_hub

    upload, mirror, _ = hub
    torch.manual_seed(3)
    e3d_s = create_model("e3d_s", num_classes=400).eval()
    push_to_hub(save_pretrained(e3d_s, tmp_path / "e3d_s"), "e3d-zoo/e3d_s", endpoint=upload.url, token=TEST_TOKEN)
    clip = torch.randn(1, 3, 2, 64, 64)  # a small clip: the net is fully convolutional
    sources = ["e3d_m=e3d-zoo/e3d_m", "e3d_s=e3d-zoo/e3d_s", "timm::e3d_s=e3d-zoo/e3d_s", "e3d_s"]
    report, out = _pull(sources, mirror, tmp_path / "hf1", clip)
    # e3d_m was never pushed: the error names the repo tried and how to get weights
    assert "tried Hugging Face Hub repo 'e3d-zoo/e3d_m'" in report[sources[0]]["error"]
    assert "e3d-train" in report[sources[0]]["error"] and "e3d-zoo push" in report[sources[0]]["error"]
    # no tag claims published weights
    assert "no pretrained weights are published" in report["e3d_s"]["error"]
    with torch.no_grad():
        expected = e3d_s(clip)
    for source in sources[1:3]:
        assert report[source]["error"] is None and torch.equal(out[source], expected)


def test_timm_hf_hub_loader_rebuilds_a_searched_network_with_identical_outputs(hub, tmp_path):
    """timm.create_model('hf-hub:...', pretrained=True) on a pushed folder: timm's own
    config parsing (PretrainedCfg(**pretrained_cfg)), model_args to the constructor,
    the clip fields restored; outputs identical to ours and to the original."""
    from tiny_arch import tiny_model

    upload, mirror, _ = hub
    model = tiny_model(num_classes=4, seed=5).eval()  # a searched (non-zoo) architecture
    model.pretrained_cfg["frame_stride"] = 1
    folder = save_pretrained(model, tmp_path / "searched", label_names=["w", "x", "y", "z"])
    res = _push(folder, "e3d-test/searched", upload)
    assert res.returncode == 0, res.stderr
    commit = json.loads(res.stdout)["commit"]
    clip = torch.randn(1, 3, 4, 32, 32)
    sources = ["timm::hf-hub:e3d-test/searched", "hf-hub:e3d-test/searched",
               f"timm::hf-hub:e3d-test/searched@{commit}"]
    report, out = _pull(sources, mirror, tmp_path / "hf_timm", clip)
    with torch.no_grad():
        expected = model(clip)
    for source in sources:
        assert report[source]["error"] is None, report[source]
        assert torch.equal(out[source], expected)
        assert report[source]["labels"] == ["w", "x", "y", "z"]
        assert report[source]["clip"] == [4, 1, "NCTHW"]


def test_push_failures_are_one_line_errors(hub, tmp_path):
    from e3d_zoo.errors import WeightsError
    from e3d_zoo.hub import push_to_hub

    upload, _, _ = hub
    folder = save_pretrained(_model(4), tmp_path / "m")
    denied = _push(folder, "e3d-test/denied", upload, token=None)
    assert denied.returncode == 2 and "Traceback" not in denied.stderr
    assert "push to 'e3d-test/denied'" in denied.stderr and "401" in denied.stderr
    (tmp_path / "not_a_model").mkdir()
    with pytest.raises(WeightsError, match="no config.json"):
        push_to_hub(tmp_path / "not_a_model", "e3d-test/bad", endpoint=upload.url, token=TEST_TOKEN)
