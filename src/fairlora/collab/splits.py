"""Client splits of a categorised corpus: specific, mixed (3/4 + 1/4) and Dirichlet(alpha) label skew.

Every client records the category proportions its split CLAIMS and the proportions its rows HOLD;
`check_proportions` compares them (the reference's mixed splits silently became IID).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from fairlora.collab.corpora import CATEGORY
from fairlora.errors import DataError

MIXED_MAIN = 0.75
TOLERANCE = 0.05


@dataclass
class ClientSplit:
    """One client's rows and what they are made of."""

    name: str
    rows: pd.DataFrame
    claimed: dict[str, float]
    held: dict[str, float] = field(default_factory=dict)

    def proportions(self, categories: list[str]) -> np.ndarray:
        """The held category proportions as a vector over `categories`."""
        return np.array([self.held.get(c, 0.0) for c in categories])


@dataclass
class Allocation:
    """Every client's split, the categories in order, and the shared public reference rows."""

    clients: list[ClientSplit]
    categories: list[str]
    reference: pd.DataFrame

    def proportion_matrix(self) -> np.ndarray:
        """D (clients x categories): each client's held category proportions."""
        return np.stack([c.proportions(self.categories) for c in self.clients])


def claimed_proportions(
    kind: str, clients: int, categories: list[str], alpha: float, seed: int
) -> list[dict]:
    """What each client's split is meant to hold: {category: share}."""
    count = len(categories)
    if kind == "specific":
        return [{categories[i % count]: 1.0} for i in range(clients)]
    if kind == "mixed":
        if count < 2:
            raise DataError("collab.split=mixed needs at least 2 categories; use split=specific")
        return [
            {categories[i % count]: MIXED_MAIN, categories[(i + 1) % count]: 1.0 - MIXED_MAIN}
            for i in range(clients)
        ]
    if kind == "dirichlet":
        rng = np.random.default_rng(seed)
        draws = rng.dirichlet(np.full(count, alpha), size=clients)
        return [{c: float(p) for c, p in zip(categories, row, strict=True) if p > 0} for row in draws]
    raise DataError(f"collab.split: unknown split {kind!r}; allowed: specific, mixed, dirichlet")


def _counts(shares: dict[str, float], total: int) -> dict[str, int]:
    """Integer counts summing to `total` (largest remainders)."""
    raw = {c: s * total for c, s in shares.items()}
    counts = {c: int(np.floor(v)) for c, v in raw.items()}
    for c in sorted(raw, key=lambda k: raw[k] - counts[k], reverse=True)[: total - sum(counts.values())]:
        counts[c] += 1
    return {c: n for c, n in counts.items() if n > 0}


def allocate(
    corpus: pd.DataFrame,
    kind: str,
    clients: int,
    per_client: int,
    *,
    alpha: float = 0.5,
    reference: int = 16,
    categories: list[str] | None = None,
    seed: int = 0,
) -> Allocation:
    """Split `corpus` (text, category) into `clients` disjoint client sets plus a reference set."""
    available = sorted(corpus[CATEGORY].unique().tolist())
    chosen = list(categories or available)
    missing = [c for c in chosen if c not in available]
    if missing:
        raise DataError(f"collab.categories: {missing} not in the corpus; it holds {', '.join(available)}")
    claims = claimed_proportions(kind, clients, chosen, alpha, seed)
    pools = {c: corpus.index[corpus[CATEGORY] == c].tolist() for c in chosen}
    wanted = {c: 0 for c in chosen}
    counts = [_counts(claim, per_client) for claim in claims]
    for count in counts:
        for c, n in count.items():
            wanted[c] += n
    short = {c: (n, len(pools[c])) for c, n in wanted.items() if n > len(pools[c])}
    if short:
        detail = ", ".join(f"{c}: needs {n}, has {have}" for c, (n, have) in short.items())
        raise DataError(
            f"more client data than the corpus holds ({detail}); lower collab.clients or "
            f"collab.examples_per_client"
        )
    splits = []
    for i, (claim, count) in enumerate(zip(claims, counts, strict=True)):
        index = [pools[c].pop() for c, n in count.items() for _ in range(n)]
        rows = corpus.loc[index].reset_index(drop=True)
        held = rows[CATEGORY].value_counts(normalize=True).to_dict()
        splits.append(ClientSplit(f"client-{i}", rows, claim, {str(k): float(v) for k, v in held.items()}))
    return Allocation(splits, chosen, _reference(corpus, pools, reference))


def _reference(corpus: pd.DataFrame, pools: dict[str, list[int]], size: int) -> pd.DataFrame:
    """Rows no client holds, taken round-robin over the categories (a public, balanced sample)."""
    index: list[int] = []
    while len(index) < size and any(pools.values()):
        for pool in pools.values():
            if pool and len(index) < size:
                index.append(pool.pop())
    if not index:
        raise DataError("no corpus rows left for the reference set; lower collab.examples_per_client")
    return corpus.loc[index].reset_index(drop=True)


def check_proportions(split: ClientSplit, tolerance: float = TOLERANCE) -> None:
    """Raise DataError when the rows a client holds differ from what its split claims."""
    keys = set(split.claimed) | set(split.held)
    worst = max(abs(split.claimed.get(k, 0.0) - split.held.get(k, 0.0)) for k in keys)
    rows = len(split.rows)
    if worst > max(tolerance, 1.0 / max(rows, 1)):
        raise DataError(
            f"{split.name}: holds {split.held} but its split claims {split.claimed} (a bug in the split)"
        )
