"""ArchSpec: the searched-architecture format (parse, validate, serialize).

An architecture is a list of top-level blocks in the reference implementation's
vocabulary (``class``, ``in``, ``out``, ``s``, ``kt``, ``k``, ``L``, ``btn``), plus
the default clip shape it was designed for and where it came from. Everything else
(params, FLOPs, layers, STEntr-Score, the nn.Module) is derived from a spec.

File format (``schema_version`` 1)::

    {
      "schema": "e3d-arch",
      "schema_version": 1,
      "name": "e3d_s",
      "frames": 13,
      "size": 160,
      "head_hidden": 2048,
      "blocks": [{"class": "Conv3DKXBNRELU", "in": 3, "out": 24, "s": 2, "kt": 1, "k": 3}, ...],
      "provenance": {"source": "...", "budgets": {...}, "score": ..., "seed": ..., "date": "..."},
      "notes": "..."
    }

The reference implementation's structure text (its published ``E3D_*.txt`` and a
search's ``best_structure.txt``: a Python literal ``{'best_structures': [[blocks]],
'space_arch': 'Cnn3DNet'}``, blocks carrying ``inner_class``) is read with
``ast.literal_eval`` (never ``eval``) and written the way its searcher writes it.
"""
from __future__ import annotations

import ast
import json
import os
import pprint
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from .atomic import atomic_write_text, parse_json, read_text_limited
from .errors import ArchError

SCHEMA = "e3d-arch"
SCHEMA_VERSION = 1

CONV = "Conv3DKXBNRELU"
SUPER = "SuperRes3DK1DWK1"
BLOCK_CLASSES = (CONV, SUPER)

_CONV_FIELDS = ("class", "in", "out", "s", "kt", "k")
_SUPER_FIELDS = ("class", "in", "out", "s", "kt", "k", "L", "btn")
_TOP_FIELDS = ("schema", "schema_version", "name", "frames", "size", "head_hidden",
               "blocks", "provenance", "notes")
# The reference implementation (TinyNAS) adds ``inner_class`` to every super-block it
# builds, so its best_structure.txt and published E3D_*.txt carry it; only this value
# describes the layers SuperRes3DK1DWK1 stacks here.
INNER_CLASS = "Res3DK1DWK1"
# What the reference's searcher writes as ``space_arch`` for 3D CNNs (``model.type``).
SPACE_ARCH = "Cnn3DNet"
_TINYNAS_TOP_FIELDS = ("best_structures", "space_arch")
# Keys the TinyNAS text may carry that do not change the network we build.
_TINYNAS_IGNORED_KEYS = ("nbitsA", "nbitsW")

DEFAULT_HEAD_HIDDEN = 2048

# Upper bounds, checked before any cost is computed. Far above every published or
# searchable E3D (E3D-L: 640 channels, L <= 10, 16 x 312^2), low enough that a hostile
# file cannot make loading, costing or scoring allocate or loop without end.
MAX_CHANNELS = 16384
MAX_KERNEL = 15
MAX_LAYERS_PER_BLOCK = 256      # "L" of a super-block
MAX_BLOCKS = 256
MAX_FRAMES = 4096
MAX_SIZE = 8192
MAX_HEAD_HIDDEN = 65536
MAX_FILE_BYTES = 1 << 20        # an arch file; E3D-L's is 2 kB
MAX_TINYNAS_CHARS = 1 << 18     # Python-literal parsing costs ~1.5 s per MB; 256 structures fit
MAX_NAME_CHARS = 128
MAX_NOTES_CHARS = 65536
MAX_PROVENANCE_CHARS = 1 << 18  # as JSON
MAX_NESTING = 32                # provenance objects inside objects


@dataclass(frozen=True)
class BlockSpec:
    """One top-level block. A super-block (``SUPER``) expands into ``L`` residual layers."""

    kind: str
    in_channels: int
    out_channels: int
    stride: int
    kt: int
    k: int
    L: int = 1
    btn: int = 0  # bottleneck width; 0 for plain conv blocks

    @property
    def is_super(self) -> bool:
        return self.kind == SUPER

    def residual_layers(self) -> Iterator[tuple[int, int, int]]:
        """(in_channels, out_channels, stride) of each residual layer of a super-block."""
        for j in range(self.L):
            if j == 0:
                yield self.in_channels, self.out_channels, self.stride
            else:
                yield self.out_channels, self.out_channels, 1

    def to_dict(self) -> dict[str, Any]:
        d = {"class": self.kind, "in": self.in_channels, "out": self.out_channels,
             "s": self.stride, "kt": self.kt, "k": self.k}
        if self.is_super:
            d["L"] = self.L
            d["btn"] = self.btn
        return d

    def key(self) -> tuple:
        return (self.kind, self.in_channels, self.out_channels, self.stride, self.kt, self.k,
                self.L, self.btn)


@dataclass(frozen=True)
class ArchSpec:
    """A validated architecture. Build one with :func:`load_arch` or :meth:`from_dict`."""

    blocks: tuple[BlockSpec, ...]
    frames: int
    size: int
    name: str | None = None
    head_hidden: int = DEFAULT_HEAD_HIDDEN
    provenance: Mapping[str, Any] = field(default_factory=dict)
    notes: str = ""

    def __post_init__(self) -> None:
        # Every way to make a spec (replace(), with_clip(), the search) passes here, so a
        # clip shape the network cannot take never reaches a cost or an nn.Module.
        if not self.blocks:
            raise ArchError(f"{self.name or '<arch>'}: blocks: expected at least one block")
        _check_clip(self.frames, self.size, self.blocks, self.name or "<arch>")

    def with_clip(self, frames: int | None = None, size: int | None = None) -> "ArchSpec":
        """The same network at another clip shape; ``None`` keeps the current value, and
        anything else (0 included) is validated, never replaced by a default."""
        return self.replace(frames=self.frames if frames is None else frames,
                            size=self.size if size is None else size)

    # ---- derived structure -------------------------------------------------
    @property
    def in_chans(self) -> int:
        return self.blocks[0].in_channels

    @property
    def num_features(self) -> int:
        """Channels entering the classifier head (the last block's out)."""
        return self.blocks[-1].out_channels

    def stage_ends(self) -> list[int]:
        """Index of the last block of each stage.

        Stages split at the stride-2 blocks: every stride-2 block after the first
        starts a new stage, so E3D's five stride-2 blocks give five stages.
        """
        starts = [i for i, b in enumerate(self.blocks) if b.stride == 2]
        if not starts or starts[0] != 0:
            starts = [0] + starts
        ends = [s - 1 for s in starts[1:]] + [len(self.blocks) - 1]
        return ends

    def key(self) -> tuple:
        """Hashable identity of the network (blocks only), for deduplication."""
        return tuple(b.key() for b in self.blocks)

    def with_blocks(self, blocks: Iterable[BlockSpec], **changes: Any) -> "ArchSpec":
        return replace(self, blocks=tuple(blocks), **changes)

    def replace(self, **changes: Any) -> "ArchSpec":
        return replace(self, **changes)

    # ---- serialization -----------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "schema_version": SCHEMA_VERSION,
            "name": self.name,
            "frames": self.frames,
            "size": self.size,
            "head_hidden": self.head_hidden,
            "blocks": [b.to_dict() for b in self.blocks],
            "provenance": dict(self.provenance),
            "notes": self.notes,
        }

    def to_json(self) -> str:
        """Canonical text: loading it and writing it again gives the same bytes."""
        return _dump_json(self.to_dict())

    def save(self, path: str | os.PathLike) -> Path:
        return atomic_write_text(path, self.to_json())

    @classmethod
    def from_dict(cls, data: Any, source: str | None = None) -> "ArchSpec":
        return _parse(data, source or "<arch>")

    @classmethod
    def from_json(cls, text: str, source: str | None = None) -> "ArchSpec":
        where = source or "<arch>"
        return _parse(parse_json(text, where, what="arch file", error=ArchError), where)

    # ---- TinyNAS structure text --------------------------------------------
    def to_tinynas_text(self) -> str:
        """best_structure.txt as the reference's searcher writes it: the pretty-printed
        dict ``{'space_arch': 'Cnn3DNet', 'best_structures': [blocks]}`` (its
        ``save_pyobj``: ``pprint.pformat(indent=2, width=120, compact=True)``), with the
        ``inner_class`` the reference puts in every super-block."""
        blocks = []
        for b in self.blocks:
            d = b.to_dict()
            if b.is_super:
                d["inner_class"] = INNER_CLASS
            blocks.append(d)
        text = pprint.pformat({"space_arch": SPACE_ARCH, "best_structures": [blocks]},
                              indent=2, width=120, compact=True)
        return text + "\n"

    @classmethod
    def from_tinynas_text(cls, text: str, *, frames: int, size: int, index: int = 0,
                          name: str | None = None, source: str | None = None) -> "ArchSpec":
        where = source or "<tinynas>"
        if len(text) > MAX_TINYNAS_CHARS:
            raise ArchError(f"{where}: {len(text):,} characters of TinyNAS structure text; at most "
                            f"{MAX_TINYNAS_CHARS:,} allowed")
        try:
            with warnings.catch_warnings():  # e.g. "invalid escape sequence": noise, not an answer
                warnings.simplefilter("ignore")
                data = ast.literal_eval(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as exc:
            raise ArchError(f"{where}: not a Python literal (TinyNAS structure text): {exc}") from None
        if isinstance(data, Mapping):
            if "best_structures" not in data:
                raise ArchError(f"{where}: expected a dict with key 'best_structures', "
                                f"found keys {_show(sorted(str(k)[:30] for k in data))}")
            unknown = sorted(str(k)[:30] for k in data if k not in _TINYNAS_TOP_FIELDS)
            if unknown:
                raise ArchError(f"{where}: unknown top-level key(s) {_show(unknown)}; the reference "
                                f"writes only {list(_TINYNAS_TOP_FIELDS)}")
            arch = data.get("space_arch", SPACE_ARCH)
            if arch != SPACE_ARCH:
                raise ArchError(f"{where}: space_arch: expected {SPACE_ARCH!r} (the reference's "
                                f"3D CNN), found {_show(arch)}: a structure for another network family")
            structures = data["best_structures"]
        else:
            structures = data
        if not isinstance(structures, (list, tuple)) or not structures:
            raise ArchError(f"{where}: best_structures: expected a non-empty list, found "
                            f"{type(structures).__name__}")
        if isinstance(structures[0], Mapping):  # a single structure, not a list of them
            structures = [structures]
        if not isinstance(index, int) or not 0 <= index < len(structures):
            raise ArchError(f"{where}: best_structures[{index}]: index out of range "
                            f"(the file holds {len(structures)} structure(s))")
        if not isinstance(structures[index], (list, tuple)):
            raise ArchError(f"{where}: best_structures[{index}]: expected a list of blocks, found "
                            f"{_show(structures[index])}")
        blocks = []
        for b in structures[index]:
            if isinstance(b, Mapping):
                b = {k: v for k, v in b.items() if k not in _TINYNAS_IGNORED_KEYS}
            blocks.append(b)
        provenance = {"source": "tinynas", "tinynas_index": index}
        if source:
            provenance["file"] = os.path.basename(source)
        data = {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "name": name,
                "frames": frames, "size": size, "blocks": blocks, "provenance": provenance}
        return _parse(data, f"{where}: best_structures[{index}]")


def _dump_json(data: Any) -> str:
    """Indented JSON with one block per line, so diffs of searched archs read well."""
    blocks = data.get("blocks")
    if not isinstance(blocks, list):
        return json.dumps(data, indent=1, ensure_ascii=False) + "\n"
    marker = "__E3D_BLOCKS__"
    text = json.dumps({**data, "blocks": marker}, indent=1, ensure_ascii=False)
    rows = ",\n".join("  " + json.dumps(b, ensure_ascii=False) for b in blocks)
    return text.replace(json.dumps(marker), "[\n" + rows + "\n ]") + "\n"


def load_arch(path: str | os.PathLike, *, frames: int | None = None,
              size: int | None = None) -> ArchSpec:
    """Load an arch JSON file, or TinyNAS structure text (``.txt``/``.py``).

    TinyNAS text has no clip shape, so ``frames`` and ``size`` are required for it.
    """
    path = Path(path)
    text = read_text_limited(path, MAX_FILE_BYTES, what="architecture file", error=ArchError)
    if path.suffix.lower() in (".txt", ".py") or text.lstrip().startswith(("{'", "[{'")):
        if frames is None or size is None:
            raise ArchError(f"{path}: TinyNAS structure text has no clip shape; "
                            "pass frames and size (--frames/--size)")
        return ArchSpec.from_tinynas_text(text, frames=frames, size=size, source=str(path),
                                          name=path.stem)
    spec = ArchSpec.from_json(text, source=str(path))
    if frames is not None or size is not None:
        try:
            spec = spec.with_clip(frames, size)
        except ArchError as exc:
            raise ArchError(f"{path}: {exc}") from None
    return spec


# ---- validation ------------------------------------------------------------

def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _show(v: Any, width: int = 60) -> str:
    """A value from the input, short enough for a one-line message."""
    text = repr(v) if not isinstance(v, (list, tuple, dict)) or len(v) < 8 else \
        f"<{type(v).__name__} of {len(v)} items>"
    return text if len(text) <= width else text[:width - 3] + "..."


def _int_field(d: Mapping, key: str, prefix: str, *, minimum: int = 1,
               maximum: int | None = None) -> int:
    """``prefix`` names the place: 'file: ' for top-level fields, 'file: blocks[2].' for blocks."""
    expected = (f"an integer in [{minimum}, {maximum}]" if maximum is not None
                else f"an integer >= {minimum}")
    if key not in d:
        raise ArchError(f"{prefix}{key}: missing (expected {expected})")
    v = d[key]
    if not _is_int(v):
        raise ArchError(f"{prefix}{key}: expected {expected}, found {_show(v)}")
    if v < minimum or (maximum is not None and v > maximum):
        raise ArchError(f"{prefix}{key}: expected {expected}, found {_show(v)}")
    return v


def _check_text(v: Any, where: str, limit: int, printable: bool = False) -> str:
    if not isinstance(v, str):
        raise ArchError(f"{where}: expected a string, found {_show(v)}")
    if len(v) > limit:
        raise ArchError(f"{where}: {len(v):,} characters; at most {limit:,} allowed")
    try:
        v.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ArchError(f"{where}: not valid Unicode text ({exc.reason} at character "
                        f"{exc.start}, e.g. a lone surrogate escape)") from None
    if printable and not v.isprintable():
        raise ArchError(f"{where}: expected printable text without control characters or "
                        f"line breaks, found {_show(v)}")
    return v


def _nesting(v: Any, limit: int) -> int:
    """Depth of objects/lists in ``v``, without recursing past ``limit``."""
    depth, level = 0, [v]
    while level:
        nxt = []
        for x in level:
            if isinstance(x, Mapping):
                nxt.extend(x.values())
            elif isinstance(x, (list, tuple)):
                nxt.extend(x)
        if not nxt:
            break
        depth += 1
        if depth > limit:
            return depth
        level = nxt
    return depth


def _parse_block(d: Any, where: str) -> BlockSpec:
    if not isinstance(d, Mapping):
        raise ArchError(f"{where}: expected an object with fields {list(_SUPER_FIELDS)}, "
                        f"found {type(d).__name__}")
    kind = d.get("class")
    if kind not in BLOCK_CLASSES:
        raise ArchError(f"{where}.class: unknown block class {_show(kind)}; expected one of "
                        f"{list(BLOCK_CLASSES)}")
    if "inner_class" in d and (kind != SUPER or d["inner_class"] != INNER_CLASS):
        expected = f"whose layers are {INNER_CLASS!r}" if kind == SUPER else "which has no inner layers"
        raise ArchError(f"{where}.inner_class: {_show(d['inner_class'])} contradicts class {kind!r}, "
                        f"{expected}")
    allowed = _SUPER_FIELDS + ("inner_class",) if kind == SUPER else _CONV_FIELDS
    unknown = [str(k)[:30] for k in d if k not in allowed]
    if unknown:
        raise ArchError(f"{where}: unknown field(s) {unknown[:8]} for {kind}; expected only "
                        f"{list(allowed)}")
    field_where = where + "."
    cin = _int_field(d, "in", field_where, maximum=MAX_CHANNELS)
    cout = _int_field(d, "out", field_where, maximum=MAX_CHANNELS)
    s = _int_field(d, "s", field_where)
    if s not in (1, 2):
        raise ArchError(f"{where}.s: expected stride 1 or 2, found {_show(s)}")
    kt = _int_field(d, "kt", field_where, maximum=MAX_KERNEL)
    k = _int_field(d, "k", field_where, maximum=MAX_KERNEL)
    for name, v in (("kt", kt), ("k", k)):
        if v % 2 == 0:
            raise ArchError(f"{where}.{name}: expected an odd kernel size, found {v}")
    if kind == SUPER:
        L = _int_field(d, "L", field_where, maximum=MAX_LAYERS_PER_BLOCK)
        btn = _int_field(d, "btn", field_where, maximum=MAX_CHANNELS)
        return BlockSpec(kind, cin, cout, s, kt, k, L, btn)
    return BlockSpec(kind, cin, cout, s, kt, k)


def _check_clip(frames: Any, size: Any, blocks: Iterable[BlockSpec], where: str) -> None:
    if not _is_int(frames) or not 1 <= frames <= MAX_FRAMES:
        raise ArchError(f"{where}: frames: expected an integer in [1, {MAX_FRAMES}], found "
                        f"{_show(frames)}")
    n_down = sum(1 for b in blocks if b.stride == 2)
    need = 2 ** n_down
    if not _is_int(size) or not need <= size <= MAX_SIZE:
        raise ArchError(f"{where}: size: expected an integer in [{need}, {MAX_SIZE}] (the network "
                        f"downsamples {n_down} times, so the frame side must be at least {need}), "
                        f"found {_show(size)}")


def _parse(data: Any, where: str) -> ArchSpec:
    if not isinstance(data, Mapping):
        raise ArchError(f"{where}: expected a JSON object, found {type(data).__name__}")
    unknown = [str(k)[:30] for k in data if k not in _TOP_FIELDS]
    if unknown:
        raise ArchError(f"{where}: unknown top-level field(s) {unknown[:8]}; expected only "
                        f"{list(_TOP_FIELDS)}")
    if data.get("schema", SCHEMA) != SCHEMA:
        raise ArchError(f"{where}: schema: expected {SCHEMA!r}, found {_show(data.get('schema'))}")
    version = data.get("schema_version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION or isinstance(version, bool):
        raise ArchError(f"{where}: schema_version: expected {SCHEMA_VERSION}, found {_show(version)} "
                        "(written by a newer e3d-zoo?)")
    name = data.get("name")
    if name is not None:
        _check_text(name, f"{where}: name", MAX_NAME_CHARS, printable=True)
    frames = _int_field(data, "frames", where + ": ", maximum=MAX_FRAMES)
    size = _int_field(data, "size", where + ": ", maximum=MAX_SIZE)
    head_hidden = data.get("head_hidden", DEFAULT_HEAD_HIDDEN)
    if not _is_int(head_hidden) or not 0 <= head_hidden <= MAX_HEAD_HIDDEN:
        raise ArchError(f"{where}: head_hidden: expected an integer in [0, {MAX_HEAD_HIDDEN}] "
                        f"(0: a single linear classifier), found {_show(head_hidden)}")
    provenance = data.get("provenance", {})
    if not isinstance(provenance, Mapping):
        raise ArchError(f"{where}: provenance: expected an object, found {type(provenance).__name__}")
    notes = _check_text(data.get("notes", ""), f"{where}: notes", MAX_NOTES_CHARS)
    raw_blocks = data.get("blocks")
    if not isinstance(raw_blocks, (list, tuple)) or not raw_blocks:
        raise ArchError(f"{where}: blocks: expected a non-empty list of blocks, found "
                        f"{_show(raw_blocks)}")
    if len(raw_blocks) > MAX_BLOCKS:
        raise ArchError(f"{where}: blocks: {len(raw_blocks):,} blocks; at most {MAX_BLOCKS} allowed")
    blocks = tuple(_parse_block(b, f"{where}: blocks[{i}]") for i, b in enumerate(raw_blocks))
    for i in range(1, len(blocks)):
        if blocks[i].in_channels != blocks[i - 1].out_channels:
            raise ArchError(
                f"{where}: blocks[{i}].in: channel mismatch: expected {blocks[i - 1].out_channels} "
                f"(blocks[{i - 1}].out), found {blocks[i].in_channels}")
    _check_provenance(provenance, f"{where}: provenance")
    try:  # __post_init__ checks the clip shape; the file's name goes in front, as in load_arch
        return ArchSpec(blocks=blocks, frames=frames, size=size, name=name,
                        head_hidden=head_hidden, provenance=dict(provenance), notes=notes)
    except ArchError as exc:
        raise ArchError(f"{where}: {exc}") from None


def _check_provenance(provenance: Mapping, where: str) -> None:
    if _nesting(provenance, MAX_NESTING) > MAX_NESTING:
        raise ArchError(f"{where}: nested more than {MAX_NESTING} levels deep")
    try:
        text = json.dumps(dict(provenance), ensure_ascii=False, allow_nan=False)
        text.encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise ArchError(f"{where}: not JSON-serializable with finite numbers: {exc}") from None
    except UnicodeEncodeError as exc:
        raise ArchError(f"{where}: not valid Unicode text ({exc.reason}, e.g. a lone "
                        "surrogate escape)") from None
    if len(text) > MAX_PROVENANCE_CHARS:
        raise ArchError(f"{where}: {len(text):,} characters as JSON; at most "
                        f"{MAX_PROVENANCE_CHARS:,} allowed")
