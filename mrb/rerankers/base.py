"""The reranker protocol, the adapter registry and the wrapper for plain callables."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterable, Sequence
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, NamedTuple

from mrb.errors import MRBError
from mrb.tasks import Side, TaskType

if TYPE_CHECKING:
    from mrb.data import Pack, Pair, Record
    from mrb.tasks import TaskSpec

ALL_SIDES: frozenset[Side] = frozenset({"t", "i", "it"})
TEXT_ONLY: frozenset[Side] = frozenset({"t"})
ENTRY_POINT_GROUP = "mrb.rerankers"


class Reranker:
    """Base class of every reranker: declare the sides you accept and implement `score`.

    `score` receives a batch of pairs and returns one finite float per pair (a sequence, a NumPy
    array or a 1-D tensor), higher meaning more relevant. `start_task` is called once before a
    task's pairs arrive (a baseline that needs the pack, such as the oracle, reads it there).

    A model may instead split scoring into `prepare` (the CPU work for a batch: decoding,
    tokenising, image preprocessing) and `forward` (the model on a prepared batch); the runner
    then prepares the next batches in a worker thread while the model scores the current one.

    Identity (`mrb.identity`): `name` (by default the class's name) labels the results; `version`,
    or a `settings()` override that returns what decides the scores, identifies the model when its
    state cannot be fingerprinted (a loaded model, a tokenizer). Without either, MRB fingerprints
    the class's code and the instance's attributes.
    """

    name: str = "reranker"
    version: str | None = None
    query_sides: frozenset[Side] = ALL_SIDES
    document_sides: frozenset[Side] = ALL_SIDES

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" not in vars(cls):
            cls.name = cls.__name__  # two unnamed classes never share a name

    def supports(self, task_type: TaskType) -> bool:
        return task_type.query_side in self.query_sides and task_type.document_side in self.document_sides

    def start_task(self, task: TaskSpec, pack: Pack) -> None:
        """Hook called before a task is scored; the default does nothing."""

    def ready(self) -> None:
        """Hook called before the first pair of a run is scored (not at all when the score cache has them all):
        where a model loads its weights. The default does nothing."""

    def score(self, pairs: Sequence[Pair]) -> Sequence[float]:
        """Score a batch.

        Args:
            pairs: the batch, each an instruction, a query `Record` and a document `Record` (their
                `text` and `image()`); the runner groups and orders them, so do not rely on their order.

        Returns:
            One finite real number per pair, in the order of `pairs`: a list, a NumPy array or a
            1-D tensor. Higher means more relevant; ties are broken by first-stage rank.
        """
        if not prepares_ahead(self):
            raise NotImplementedError(f"{type(self).__name__} implements neither score nor prepare and forward")
        return self.forward(self.prepare(pairs))

    def prepare(self, pairs: Sequence[Pair]) -> Any:
        """The CPU work for a batch, run ahead of `forward` (possibly in another thread than `forward`)."""
        raise NotImplementedError

    def forward(self, prepared: Any) -> Sequence[float]:
        """The scores of a batch that `prepare` made."""
        raise NotImplementedError

    def settings(self) -> dict[str, Any]:
        """What decides this reranker's scores (checkpoint, dtype, options, …): recorded with every result
        and, when overridden, the model's identity in place of a fingerprint of its state."""
        return {"name": self.name}

    def declares_settings(self) -> bool:
        """Whether `settings()` is the class's own declaration rather than the base's name-only default."""
        return type(self).settings is not Reranker.settings


def checked_sides(value: Any, owner: str, attribute: str) -> frozenset[Side]:
    """A reranker's declared `query_sides` / `document_sides` as a set of ``t``, ``i``, ``it``, or an `MRBError`:
    a string (``"it"`` would read as {"i", "t"}) or an unknown side (``"image"``) would make every task silently
    unsupported."""
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise MRBError(f"{owner}: {attribute} must be a set of sides (of {sorted(ALL_SIDES)}), not {value!r}")
    unknown = sorted({str(v) for v in value} - ALL_SIDES)
    if unknown:
        raise MRBError(
            f"{owner}: {attribute} holds unknown side(s) {', '.join(map(repr, unknown))}; sides are 't' (text), 'i' "
            "(an image or a visual document) and 'it' (image and text)"
        )
    return frozenset(value)


def check_declaration(reranker: Reranker) -> None:
    """Refuse a reranker whose declared sides are not sets of known sides (see `checked_sides`)."""
    for attribute in ("query_sides", "document_sides"):
        checked_sides(getattr(reranker, attribute), f"reranker {reranker.name!r}", attribute)


class Window(NamedTuple):
    """One window of a listwise reranker: the task instruction, the query and candidates in their current order."""

    instruction: str
    query: Record
    candidates: Sequence[Record]


class ListwiseReranker(Reranker):
    """Base class of listwise rerankers: declare `window`, `stride` and the sides you accept, and implement `rank`.

    The runner ranks each query's candidates with a sliding window, back to front as RankGPT does
    (`mrb.listwise`): the last `window` candidates first, then `stride` places nearer the top, each window
    seeing the order the windows before it left, until a window reaches the top. That last window is the
    previous one moved by `stride` and cut at the top (rank_llm's rule), or with `full_last_window` the
    top `window` candidates (MTEB's LightOn rule). The final order becomes the scores n − rank.

    `rank` returns the window's order: indices into `candidates`, most relevant first. What is not a
    permutation is repaired and counted in the run statistics (duplicates and indices outside the window
    dropped, missing ones appended in input order; a window without one valid index keeps its order and
    counts as unparsable). `rank_windows` ranks independent windows (of different queries) in one call:
    override it to batch them. Name, version, sides, `start_task` and `settings` are a `Reranker`'s; the
    runner never calls `score`.
    """

    window: int = 20
    stride: int = 10
    full_last_window: bool = False

    def rank(self, instruction: str, query: Record, candidates: Sequence[Record]) -> Sequence[int]:
        """The order of one window: indices into `candidates`, most relevant first."""
        raise NotImplementedError(f"{type(self).__name__} implements neither rank nor rank_windows")

    def rank_windows(self, windows: Sequence[Window]) -> Sequence[Sequence[int]]:
        """The order of each window (one `rank` each unless overridden)."""
        return [self.rank(*w) for w in windows]

    def score(self, pairs: Sequence[Pair]) -> Sequence[float]:
        raise MRBError(f"{self.name} is a listwise reranker: it ranks windows of candidates (rank), it does not score pairs")


def check_window(window: int, stride: int) -> None:
    """A window of at least two candidates, moving by 1 … `window` places (a larger stride would skip candidates)."""
    if window < 2 or not 1 <= stride <= window:
        raise MRBError(f"a listwise window needs window >= 2 and 1 <= stride <= window, got window {window}, stride {stride}")


def prepares_ahead(reranker: Reranker) -> bool:
    """Whether `reranker` splits scoring into `prepare` and `forward` (so batches can be prepared ahead); a
    `Fallback` does when the model it feeds does (else the runner decodes its images ahead)."""
    from mrb.rerankers.fallback import Fallback

    if isinstance(reranker, Fallback):
        return prepares_ahead(reranker.inner)
    return type(reranker).prepare is not Reranker.prepare


class CallableReranker(Reranker):
    """Wraps a plain function ``f(pairs) -> scores`` (or the ``score`` method of an object); its name, version,
    sides and settings come from the arguments, else from the function or object's attributes."""

    def __init__(
        self,
        fn: Callable[[Sequence[Pair]], Sequence[float]],
        name: str | None = None,
        version: str | None = None,
        source: Any = None,
    ) -> None:
        source = fn if source is None else source
        self.fn = fn
        self.name = str(name or getattr(source, "name", None) or getattr(source, "__name__", type(source).__name__))
        self.version = version if version is not None else getattr(source, "version", None)
        owner = f"reranker {self.name!r}"
        self.query_sides = checked_sides(getattr(source, "query_sides", ALL_SIDES), owner, "query_sides")
        self.document_sides = checked_sides(getattr(source, "document_sides", ALL_SIDES), owner, "document_sides")
        declared = getattr(source, "settings", None)
        self._settings = declared if callable(declared) else None
        start = getattr(source, "start_task", None)
        if callable(start):
            self.start_task = start  # type: ignore[method-assign]

    def score(self, pairs: Sequence[Pair]) -> Sequence[float]:
        return self.fn(pairs)

    def settings(self) -> dict[str, Any]:
        return dict(self._settings()) if self._settings is not None else {"name": self.name}

    def declares_settings(self) -> bool:
        return self._settings is not None


def as_reranker(obj: Any, *, name: str | None = None, version: str | None = None) -> Reranker:
    """Accept a `Reranker`, an object with a ``score(pairs)`` method, or a plain callable; `name` and `version`
    (when given) override the object's own."""
    if isinstance(obj, Reranker):
        if name is not None:
            obj.name = name
        if version is not None:
            obj.version = version
        return obj
    if callable(getattr(obj, "score", None)):
        return CallableReranker(
            obj.score, name=name or getattr(obj, "name", None) or type(obj).__name__, version=version, source=obj
        )
    if callable(obj):
        return CallableReranker(obj, name=name, version=version)
    raise MRBError(f"cannot use {obj!r} as a reranker: pass a preset name, a Reranker, or a callable f(pairs) -> scores")


# Adapter name → "module:Class"; imported on first use so `mrb models` stays fast and optional
# dependencies are only needed by the models that use them.
_ADAPTERS: dict[str, str | type[Reranker]] = {
    "first-stage": "mrb.rerankers.baselines:FirstStage",
    "random": "mrb.rerankers.baselines:RandomScores",
    "oracle": "mrb.rerankers.baselines:Oracle",
    "bm25": "mrb.rerankers.baselines:BM25",
    "sentence-embedding": "mrb.rerankers.bi_encoder:SentenceEmbedding",
    "qwen-vl-yes-no": "mrb.rerankers.qwen_vl:QwenVLYesNo",
    "qwen3-vl-reranker": "mrb.rerankers.qwen_vl:Qwen3VLReranker",
    "monoqwen-vl": "mrb.rerankers.qwen_vl:MonoQwenVL",
    "jina-reranker-m0": "mrb.rerankers.jina:JinaRerankerM0",
    "qwen3-reranker": "mrb.rerankers.text_llm:Qwen3Reranker",
    "cross-encoder": "mrb.rerankers.cross_encoder:CrossEncoder",
    "listwise-chat": "mrb.rerankers.listwise_chat:ChatListwise",
    "listwise-qwen-vl": "mrb.rerankers.listwise_chat:QwenVLListwise",
}


def register(name: str) -> Callable[[type[Reranker]], type[Reranker]]:
    """Class decorator: make a reranker class available as an adapter under `name` (refused if another
    class holds that name)."""

    def decorate(cls: type[Reranker]) -> type[Reranker]:
        held = _ADAPTERS.get(name)
        where = f"{cls.__module__}:{cls.__qualname__}"
        if held is not None and held is not cls and held != where and _where(held) != where:
            raise MRBError(f"adapter name {name!r} is taken by {_where(held)}; register {where} under another name")
        _ADAPTERS[name] = cls
        return cls

    return decorate


def _where(target: str | type) -> str:
    return target if isinstance(target, str) else f"{target.__module__}:{target.__qualname__}"


def _plugin_adapters() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def adapter_names() -> list[str]:
    return sorted(set(_ADAPTERS) | set(_plugin_adapters()))


def resolve_adapter(name: str) -> Callable[..., Reranker]:
    """The class (or factory) registered under `name`, from the built-ins or an installed plugin."""
    target = _ADAPTERS.get(name)
    plugin = _plugin_adapters().get(name)
    if target is not None and plugin is not None:
        raise MRBError(
            f"adapter name {name!r} is both MRB's ({_where(target)}) and the plugin {plugin.value}'s; rename the plugin's entry point"
        )
    if target is None:
        if plugin is None:
            raise MRBError(unknown_name_message("adapter", name, adapter_names()))
        factory: Callable[..., Reranker] = plugin.load()
        return factory
    if isinstance(target, str):
        module, _, attr = target.partition(":")
        target = getattr(importlib.import_module(module), attr)
        _ADAPTERS[name] = target
    return target


def _signatures(factory: Callable[..., Reranker]) -> list[inspect.Signature]:
    """The factory's signature and, while it passes ``**kwargs`` on, those of its base classes' ``__init__``."""
    chain = [vars(c)["__init__"] for c in factory.__mro__ if "__init__" in vars(c)] if isinstance(factory, type) else [factory]
    signatures = []
    for fn in chain:
        signatures.append(inspect.signature(fn))
        if not any(p.kind is p.VAR_KEYWORD for p in signatures[-1].parameters.values()):
            return signatures
    return []  # it takes any keyword (a plain **kwargs factory): nothing to check


def option_parameters(factory: Callable[..., Reranker]) -> list[inspect.Parameter] | None:
    """The keyword parameters an adapter takes, its bases' included; None when it takes any keyword."""
    signatures = _signatures(factory)
    if not signatures:
        return None
    params: dict[str, inspect.Parameter] = {}
    for sig in signatures:
        for spec in sig.parameters.values():
            if spec.name != "self" and spec.kind in (spec.POSITIONAL_OR_KEYWORD, spec.KEYWORD_ONLY):
                params.setdefault(spec.name, spec)  # the subclass's declaration wins
    return list(params.values())


def build(factory: Callable[..., Reranker], options: dict[str, Any]) -> Reranker:
    """Instantiate an adapter, rejecting options it does not take, and naming the ones it needs."""
    name = getattr(factory, "__name__", factory)
    params = option_parameters(factory)
    if params is not None:
        takes = [p.name for p in params]
        unknown = sorted(set(options) - set(takes))
        if unknown:
            raise MRBError(f"{name} does not take option(s) {', '.join(unknown)}; it takes: {', '.join(takes) or 'none'}")
        missing = [p.name for p in params if p.default is p.empty and p.name not in options]
        if missing:
            hint = (
                " (give a checkpoint folder or hub id as --model and this adapter as --adapter)"
                if "checkpoint" in missing
                else ""
            )
            raise MRBError(f"{name} needs {', '.join(missing)}{hint}")
    return factory(**options)


def unknown_name_message(kind: str, name: str, known: Sequence[str]) -> str:
    import difflib

    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    return f"unknown {kind} {name!r}.{hint} Known: {', '.join(sorted(known))}."
