"""Compositions are small value objects that say which modules a forward pass runs.

`Single` and `Fuse` name registered modules; `BatchSplit` gives each row of a batch its own adapter or tree;
`Parallel` runs one batch under several branches (one request, several tasks).
`Stack` and `Average` are trees over adapter names, with the semantics and the nesting rules of
AdapterHub `adapters` 1.3.0 (a Stack holds names, Averages and Fuses; an Average holds names and Stacks);
`check_tree` refuses an invalid tree naming the offending node (`stack[1].average[0]`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from composer.errors import ConfigError

MAX_DEPTH = 8  # the deepest tree served


@dataclass(frozen=True)
class Single:
    """One adapter (ST-A or an MT-A member)."""

    adapter: str


@dataclass(frozen=True)
class Fuse:
    """A fusion over its member adapters (the members are fixed when the fusion is added)."""

    fusion: str


@dataclass(frozen=True)
class BatchSplit:
    """Each row of a batch its own composition: `adapters[i]` serves row i, an adapter name, a Stack or
    Average tree, or None (the plain base). AdapterHub's BatchSplit, row by row."""

    adapters: tuple[Node | None, ...]


@dataclass(frozen=True, init=False)
class Stack:
    """At each site the children run in order, each on the previous one's output (MAD-X: a language or
    domain adapter under a task adapter). The head is the last member's unless one is named."""

    children: tuple[Node, ...]

    def __init__(self, *children: Node):
        object.__setattr__(self, "children", tuple(children))


@dataclass(frozen=True, init=False)
class Average:
    """At each site the children's outputs are mixed with `weights` (normalised to sum to 1; equal when
    none are given), as AdapterHub's Average, which needs a named head."""

    children: tuple[Node, ...]
    weights: tuple[float, ...] | None = field(default=None)

    def __init__(self, *children: Node, weights: tuple[float, ...] | list[float] | None = None):
        object.__setattr__(self, "children", tuple(children))
        object.__setattr__(self, "weights", tuple(float(w) for w in weights) if weights is not None else None)

    def normalised_weights(self) -> tuple[float, ...]:
        if self.weights is None:
            return tuple(1.0 / len(self.children) for _ in self.children)
        total = sum(self.weights)
        return tuple(w / total for w in self.weights)


@dataclass(frozen=True, init=False)
class Parallel:
    """One batch under each branch (a name, a Stack or an Average): branch i's outputs are rows
    i*B … (i+1)*B-1 of the result, each as that branch gives it alone."""

    branches: tuple[Node, ...]

    def __init__(self, *branches: Node):
        object.__setattr__(self, "branches", tuple(branches))

    @property
    def children(self) -> tuple[Node, ...]:
        return self.branches


Node = str | Stack | Average | Fuse
NESTING: dict[type, tuple[type, ...]] = {
    Stack: (str, Average, Fuse),
    Average: (str, Stack),
    Parallel: (str, Stack, Average),
}


def leaves(node: Node) -> list[str]:
    """The adapter names of a tree, left to right (a name may appear more than once; a Fuse's members are
    the fusion's, not the tree's: see `fusions`)."""
    if isinstance(node, str):
        return [node]
    if isinstance(node, Fuse):
        return []
    return [leaf for child in node.children for leaf in leaves(child)]


def fusions(node: Node) -> list[str]:
    """The fusions a tree runs (`Fuse` nodes), left to right."""
    if isinstance(node, Fuse):
        return [node.fusion]
    if isinstance(node, str):
        return []
    return [f for child in node.children for f in fusions(child)]


def last_member(node: Node) -> str:
    """The module whose head a Stack serves by default: its last member (an adapter or a fusion)."""
    if isinstance(node, str):
        return node
    if isinstance(node, Fuse):
        return node.fusion
    return last_member(node.children[-1])


def check_tree(node: Node, path: str = "", depth: int = 1) -> None:
    """Refuse an invalid tree (ConfigError), naming the offending node by its path."""
    where = path or type(node).__name__.lower()
    if isinstance(node, str | Fuse):
        if not (node if isinstance(node, str) else node.fusion):
            raise ConfigError(f"{where}: a member is a module name, got an empty string")
        return
    if not isinstance(node, Stack | Average | Parallel):
        raise ConfigError(f"{where}: {type(node).__name__} is not a composition block")
    if isinstance(node, Parallel) and depth > 1:
        raise ConfigError(f"{where}: a Parallel runs at the top of a composition only")
    if depth > MAX_DEPTH:
        raise ConfigError(f"{where}: the tree is deeper than {MAX_DEPTH} blocks")
    if not node.children:
        raise ConfigError(f"{where}: empty {type(node).__name__}")
    if isinstance(node, Average) and node.weights is not None:
        if len(node.weights) != len(node.children):
            raise ConfigError(f"{where}: {len(node.weights)} weights for {len(node.children)} members")
        if abs(sum(node.weights)) < 1e-12:
            raise ConfigError(f"{where}: the weights sum to 0")
    for i, child in enumerate(node.children):
        here = f"{where}[{i}]"
        if not isinstance(child, NESTING[type(node)]):
            allowed = ", ".join("names" if t is str else f"{t.__name__}s" for t in NESTING[type(node)])
            raise ConfigError(
                f"{here}: {type(child).__name__} cannot be nested in {type(node).__name__} "
                f"(a {type(node).__name__} holds {allowed})"
            )
        named = isinstance(child, str | Fuse)
        check_tree(child, here if named else f"{here}.{type(child).__name__.lower()}", depth + 1)


Composition = Single | Fuse | BatchSplit | Stack | Average | Parallel
