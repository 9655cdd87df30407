"""ArchSpec: loading, validation messages, round trips, TinyNAS text."""
from __future__ import annotations

import copy
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from e3d_zoo import ArchError, ArchSpec, load_arch
from e3d_zoo.spec import BLOCK_CLASSES
from e3d_zoo.zoo import ZOO_MODELS, arch_path

@pytest.mark.parametrize("name", ZOO_MODELS)
def test_shipped_arch_json_round_trips_byte_identical(name):
    path = arch_path(name)
    text = path.read_text()
    spec = load_arch(path)
    assert spec.to_json() == text
    assert ArchSpec.from_json(spec.to_json()) == spec


@pytest.mark.parametrize("name", ZOO_MODELS)
def test_shipped_archs_are_the_reference_blocks(name, reference):
    ref = reference["models"][name]
    spec = load_arch(arch_path(name))
    assert [b.to_dict() for b in spec.blocks] == ref["blocks"]
    assert (spec.frames, spec.size) == (ref["frames"], ref["size"])


def test_tinynas_text_round_trip(tiny_spec):
    text = tiny_spec.to_tinynas_text()
    back = ArchSpec.from_tinynas_text(text, frames=tiny_spec.frames, size=tiny_spec.size,
                                      name=tiny_spec.name)
    assert back.key() == tiny_spec.key()
    assert back.to_tinynas_text() == text


def test_tinynas_text_is_parsed_without_eval(tmp_path):
    evil = "__import__('os').system('touch " + str(tmp_path / "pwned") + "')"
    with pytest.raises(ArchError, match="not a Python literal"):
        ArchSpec.from_tinynas_text(evil, frames=4, size=32)
    assert not (tmp_path / "pwned").exists()


def test_tinynas_reference_seed_structure_imports(reference):
    seed = reference["reference_search"]["seed_structure"]
    text = repr({"best_structures": [seed], "space_arch": "Cnn3DNet"})
    spec = ArchSpec.from_tinynas_text(text, frames=13, size=160)
    assert len(spec.blocks) == 7 and spec.blocks[1].btn == 48


def _published_layout(spec, head="{'best_structures': [[ \n"):
    """Text laid out the way the reference's published E3D_S.txt / E3D_L.txt are: a
    pretty-printed literal, plain blocks on one line, super-blocks one key per line in
    sorted order with 'inner_class', 2-space indents, no final newline."""
    rows = []
    for b in spec.blocks:
        d = dict(sorted(b.to_dict().items(), key=lambda kv: kv[0]))
        if not b.is_super:
            rows.append("  " + repr(d))
            continue
        d["inner_class"] = "Res3DK1DWK1"
        keys = sorted(d)
        lines = [f"  {{ {keys[0]!r}: {d[keys[0]]!r},"] + [f"    {k!r}: {d[k]!r}," for k in keys[1:]]
        lines[-1] = lines[-1][:-1] + "}"
        rows.append("\n".join(lines))
    first = rows[0].lstrip() if head.endswith("[[ ") else rows[0]
    return head + "\n".join([first + ","] + [r + "," for r in rows[1:-1]] + [rows[-1]]) + \
        "]],\n  'space_arch': 'Cnn3DNet'}"


@pytest.mark.parametrize("name, head", [("e3d_s", "{'best_structures': [[ \n"),
                                        ("e3d_l", "{ 'best_structures':[[ ")])
def test_reference_published_structure_files_import(tmp_path, name, head):
    spec = load_arch(arch_path(name))
    text = _published_layout(spec, head)
    assert text.count("'inner_class': 'Res3DK1DWK1'") == sum(b.is_super for b in spec.blocks)
    path = tmp_path / f"{name.upper()}.txt"
    path.write_text(text)
    back = load_arch(path, frames=spec.frames, size=spec.size)
    assert back.key() == spec.key() and back.name == name.upper()


def test_best_structure_txt_is_what_the_reference_writes_and_reads(tmp_path):
    import ast
    import pprint

    spec = load_arch(arch_path("e3d_m"))
    text = spec.to_tinynas_text()
    # the reference's searcher: save_pyobj(best_structure.txt, {'space_arch': model.type,
    # 'best_structures': [...]}) = pprint.pformat(obj, indent=2, width=120, compact=True)
    blocks = [dict(b.to_dict(), **({"inner_class": "Res3DK1DWK1"} if b.is_super else {}))
              for b in spec.blocks]
    assert text == pprint.pformat({"space_arch": "Cnn3DNet", "best_structures": [blocks]},
                                  indent=2, width=120, compact=True) + "\n"
    # the reference's readers: load_pyobj (literal_eval after 'inf' -> '1e20') and the
    # Cnn3DNet demo's get_backbone (space_arch, best_structures[network_id])
    obj = ast.literal_eval(text.replace("inf", "1e20"))
    assert obj["space_arch"] == "Cnn3DNet" and obj["best_structures"][0] == blocks
    (tmp_path / "best_structure.txt").write_text(text)
    assert load_arch(tmp_path / "best_structure.txt", frames=16, size=224).key() == spec.key()


@pytest.mark.parametrize("edit, message", [
    (lambda o: o["best_structures"][0][2].__setitem__("inner_class", "Res3DK1KX"),
     r"best_structures\[0\]: blocks\[2\]\.inner_class: 'Res3DK1KX' contradicts class 'SuperRes3DK1DWK1'"),
    (lambda o: o["best_structures"][0][0].__setitem__("inner_class", "Res3DK1DWK1"),
     r"blocks\[0\]\.inner_class: 'Res3DK1DWK1' contradicts class 'Conv3DKXBNRELU', which has no inner layers"),
    (lambda o: o.__setitem__("space_arch", "CnnNet"), r"space_arch: expected 'Cnn3DNet'.*found 'CnnNet'"),
    (lambda o: o.__setitem__("popu_score_list", [1.0]), r"unknown top-level key\(s\) \['popu_score_list'\]"),
])
def test_reference_text_keys_that_matter_are_checked(tmp_path, edit, message):
    import ast

    obj = ast.literal_eval(load_arch(arch_path("e3d_s")).to_tinynas_text())
    edit(obj)
    path = tmp_path / "best_structure.txt"
    path.write_text(repr(obj))
    with pytest.raises(ArchError, match=message) as info:
        load_arch(path, frames=13, size=160)
    assert str(path) in str(info.value)


def test_tinynas_file_needs_clip_shape(tmp_path, tiny_spec):
    p = tmp_path / "best_structure.txt"
    p.write_text(tiny_spec.to_tinynas_text())
    with pytest.raises(ArchError, match="frames and size"):
        load_arch(p)
    assert load_arch(p, frames=4, size=32).key() == tiny_spec.key()


def _blocks():
    return json.loads(load_arch(arch_path("e3d_s")).to_json())


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["blocks"][3].__setitem__("class", "Conv2D"), r"blocks\[3\]\.class: unknown block class 'Conv2D'"),
    (lambda d: d["blocks"][3].__setitem__("in", 50), r"blocks\[3\]\.in: channel mismatch: expected 48 \(blocks\[2\]\.out\), found 50"),
    (lambda d: d["blocks"][2].__setitem__("s", 3), r"blocks\[2\]\.s: expected stride 1 or 2, found 3"),
    (lambda d: d["blocks"][2].__setitem__("k", 4), r"blocks\[2\]\.k: expected an odd kernel size, found 4"),
    (lambda d: d["blocks"][2].__setitem__("kt", 0), r"blocks\[2\]\.kt: expected an integer in \[1, 15\], found 0"),
    (lambda d: d["blocks"][2].__setitem__("k", -3), r"blocks\[2\]\.k: expected an integer in \[1, 15\], found -3"),
    (lambda d: d["blocks"][4].__setitem__("L", 0), r"blocks\[4\]\.L: expected an integer in \[1, 256\], found 0"),
    (lambda d: d["blocks"][4].__setitem__("btn", "96"), r"blocks\[4\]\.btn: expected an integer in \[1, 16384\], found '96'"),
    (lambda d: d["blocks"][4].pop("btn"), r"blocks\[4\]\.btn: missing"),
    (lambda d: d["blocks"][0].__setitem__("L", 2), r"blocks\[0\]: unknown field\(s\) \['L'\]"),
    (lambda d: d["blocks"][1].__setitem__("out", True), r"blocks\[1\]\.out: expected an integer in \[1, 16384\], found True"),
    (lambda d: d.__setitem__("frames", 0), r": frames: expected an integer in \[1, 4096\], found 0"),
    (lambda d: d.__setitem__("size", 16), r": size: expected an integer in \[32, 8192\]"),
    (lambda d: d.__setitem__("blocks", []), r": blocks: expected a non-empty list"),
    (lambda d: d.__setitem__("schema_version", 2), r": schema_version: expected 1, found 2"),
    (lambda d: d.__setitem__("colour", "red"), r"unknown top-level field\(s\) \['colour'\]"),
])
def test_invalid_specs_name_file_block_and_field(tmp_path, mutate, message):
    d = _blocks()
    mutate(d)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(d))
    with pytest.raises(ArchError, match=message) as info:
        load_arch(path)
    assert str(path) in str(info.value)


def test_broken_json_names_line(tmp_path):
    p = tmp_path / "broken.json"
    p.write_text('{"name": "x",\n "frames": }')
    with pytest.raises(ArchError, match=r"broken\.json: not valid JSON: .* line 2"):
        load_arch(p)


def test_missing_file():
    with pytest.raises(ArchError, match="no such architecture file"):
        load_arch("/nonexistent/arch.json")


def test_save_is_atomic_and_loadable(tmp_path, tiny_spec):
    path = tiny_spec.save(tmp_path / "sub" / "a.json")
    assert load_arch(path) == tiny_spec
    assert [p.name for p in path.parent.iterdir()] == ["a.json"]


# ---- property test: the loader either returns a consistent spec or raises ArchError ----

_values = st.one_of(st.none(), st.booleans(), st.integers(-3, 700), st.floats(allow_nan=True),
                    st.text(max_size=5), st.sampled_from(BLOCK_CLASSES),
                    st.lists(st.integers(0, 3), max_size=2), st.dictionaries(st.text(max_size=2), st.integers(), max_size=2))
_block_keys = st.sampled_from(["class", "in", "out", "s", "kt", "k", "L", "btn", "zz"])
_top_keys = st.sampled_from(["name", "frames", "size", "head_hidden", "blocks", "provenance",
                             "notes", "schema", "schema_version", "extra"])


@st.composite
def mutated_spec(draw):
    d = copy.deepcopy(_blocks())
    for _ in range(draw(st.integers(1, 4))):
        what = draw(st.sampled_from(["block_set", "block_del", "top_set", "top_del", "drop_block", "dup_block"]))
        if what.startswith("block") and isinstance(d.get("blocks"), list) and d["blocks"]:
            i = draw(st.integers(0, len(d["blocks"]) - 1))
            blk = d["blocks"][i]
            if isinstance(blk, dict):
                key = draw(_block_keys)
                if what == "block_set":
                    blk[key] = draw(_values)
                else:
                    blk.pop(key, None)
        elif what == "top_set":
            d[draw(_top_keys)] = draw(_values)
        elif what == "top_del":
            d.pop(draw(_top_keys), None)
        elif isinstance(d.get("blocks"), list) and d["blocks"]:
            i = draw(st.integers(0, len(d["blocks"]) - 1))
            if what == "drop_block":
                d["blocks"].pop(i)
            else:
                d["blocks"].insert(i, copy.deepcopy(d["blocks"][i]))
    return d


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_spec())
def test_loader_returns_consistent_spec_or_raises_arch_error(d):
    try:
        spec = ArchSpec.from_dict(d, source="mutated.json")
    except ArchError as exc:
        assert str(exc).startswith("mutated.json")
        return
    for prev, cur in zip(spec.blocks, spec.blocks[1:]):
        assert cur.in_channels == prev.out_channels
    for b in spec.blocks:
        assert b.stride in (1, 2) and b.k % 2 == 1 and b.kt % 2 == 1 and b.L >= 1
    assert ArchSpec.from_json(spec.to_json()) == spec
