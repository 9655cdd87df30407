"""Moved to :mod:`e3d_runtime.reverify` (torch-free, for the edge install). This name
is the same module object, not a copy, so existing imports keep working."""
import sys

import e3d_runtime.reverify

sys.modules[__name__] = e3d_runtime.reverify
