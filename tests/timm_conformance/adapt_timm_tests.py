"""Adapt timm's own ``tests/test_models.py`` to E3D's clips, and nothing else.

timm's model tests build image batches (N, C, H, W) and read spatial axes from a 2D
format name. E3D takes clips (N, C, T, H, W). The adaptation, applied at test time to
the file from the sdist of the installed timm (never copied into this repository):

1. ``import e3d_zoo`` so the registry holds e3d_s, e3d_m, e3d_l;
2. every input ``torch.randn((B, *input_size))`` becomes a clip of ``CLIP_FRAMES``
   frames, (B, C, T, H, W), H and W chosen by timm's own input-size rules;
3. spatial axes are the last two (``get_spatial_dim`` of a 2D format would point at
   T and H), and an unpooled map has 5 dimensions where timm checks for 4;
4. the model-module filter of timm's ``forward_intermediates`` tests includes
   ``zoo``, the module that registers E3D.

Each rewrite is anchored on timm's text. The two every timm release has (the imports,
the clip inputs) must match; the others may match nothing in releases without those
tests. Nothing is skipped silently either way: an input left 4D fails the E3D test it
feeds, and the caller checks which timm tests ran.

    python adapt_timm_tests.py timm-1.0.31/tests/test_models.py test_models_e3d.py
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

# Frames per test clip: the temporal kernels (kt = 3) see real neighbours, and the
# suite stays fast on 2 CPU cores (timm picks H, W from the cfgs: min_input_size
# 32 x 32 where its size targets are small, the full 160-312 for forward).
CLIP_FRAMES = 4
MODULE_FILTER = "zoo"  # e3d_zoo.zoo: where @register_model runs for E3D

_HEADER = f'''
import e3d_zoo  # e3d-zoo adaptation: registers e3d_s, e3d_m, e3d_l in timm's registry
_CLIP_FRAMES = int(os.environ.get("E3D_TIMM_TEST_FRAMES", "{CLIP_FRAMES}"))


def _clip(batch_size, input_size):
    """e3d-zoo adaptation: a (N, C, T, H, W) clip batch for timm's (C, H, W) input size."""
    return (batch_size, input_size[0], _CLIP_FRAMES, *input_size[1:])
'''

# (what, pattern, replacement, required)
REWRITES = [
    ("register E3D and define the clip shape",
     r"(?m)^(from timm\.models import get_notrace_modules, get_notrace_functions\n)",
     lambda m: m.group(1) + _HEADER, True),
    ("clip inputs (batch_size)", r"torch\.randn\(\(batch_size, \*input_size\)",
     lambda m: "torch.randn(_clip(batch_size, input_size)", True),
    ("clip inputs (2)", r"torch\.randn\(\(2, \*input_size\)", lambda m: "torch.randn(_clip(2, input_size)",
     False),
    ("spatial axes are the last two", r"get_spatial_dim\(output_fmt\)", lambda m: "(-2, -1)", False),
    ("an unpooled clip map has 5 dims", r"assert len\(outputs\.shape\) == 4",
     lambda m: "assert len(outputs.shape) == 5", False),
    ("a pruned model's clip features have 5 dims", r"features\.ndim == 4", lambda m: "features.ndim == 5",
     False),
    ("forward_intermediates module filter", r"(?m)^(NON_STD_FILTERS = \[)",
     lambda m: f"FEAT_INTER_FILTERS.append({MODULE_FILTER!r})  # e3d-zoo adaptation\n\n" + m.group(1),
     False),
]


class AdaptationError(RuntimeError):
    pass


def adapt(text: str) -> tuple[str, dict[str, int]]:
    """(adapted source, {rewrite: number of places}); AdaptationError if a required
    anchor is missing."""
    counts = {}
    for what, pattern, repl, required in REWRITES:
        text, n = re.subn(pattern, repl, text)
        if n == 0 and required:
            raise AdaptationError(f"timm's test_models.py no longer has the text for '{what}' "
                                  f"(pattern {pattern!r}); update tests/timm_conformance/adapt_timm_tests.py")
        counts[what] = n
    return text, counts


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    src, dst = map(Path, argv)
    text, counts = adapt(src.read_text(encoding="utf-8"))
    dst.write_text(text, encoding="utf-8")
    for what, n in counts.items():
        print(f"{n:3d}  {what}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
