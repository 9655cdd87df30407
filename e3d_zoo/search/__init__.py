"""Training-free architecture search: STEntr-maximizing evolution under budgets.

    from e3d_zoo.search import search
    result = search(13, 160, budgets={"tinynas_flops": 2e9, "layers": 83}, out="my_s.json")
    result.spec  # the best ArchSpec; e3d_zoo.create_model("my_s.json") builds it

Under a latency budget the finalists are measured on the device (finalists.py):
``result.fits`` and ``result.latency`` say whether the result's measured latency fits.
"""
from .budgets import Budgets, LatencyMeasurer, LatencyPredictor, load_predictor
from .evaluate import Costs, FastEvaluator
from .evolution import SearchInterrupted, SearchResult, search
from .finalists import LatencyBudgetMissed, LatencyVerdict
from .scores import SCORES, Score, get_score, register_score
from .space import (REFERENCE_BUDGETS, BoundSpace, SearchSpace, default_space, load_space,
                    space_from_dict)

__all__ = ["search", "SearchResult", "SearchInterrupted", "Budgets", "LatencyPredictor",
           "LatencyMeasurer", "LatencyBudgetMissed", "LatencyVerdict", "load_predictor", "SearchSpace", "BoundSpace", "default_space", "load_space",
           "space_from_dict", "REFERENCE_BUDGETS", "FastEvaluator", "Costs", "Score", "SCORES",
           "get_score", "register_score"]
