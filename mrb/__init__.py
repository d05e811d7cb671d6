"""MRB: the Multimodal Reranking Benchmark — an evaluation harness for universal multimodal rerankers."""

__version__ = "0.2.0"

from mrb.api import evaluate  # noqa: E402
from mrb.data import Pair, Record, read_pack  # noqa: E402
from mrb.errors import MRBError  # noqa: E402
from mrb.rerankers import Reranker, get_reranker, register  # noqa: E402
from mrb.tasks import load_tasks  # noqa: E402

__all__ = ["MRBError", "Pair", "Record", "Reranker", "__version__", "evaluate", "get_reranker", "load_tasks", "read_pack", "register"]
