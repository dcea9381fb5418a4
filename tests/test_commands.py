"""Every `fairlora ...` command shown in README.md, docs/*.md and the configs' headers works.

Commands are read from the documents themselves (code blocks, inline code, YAML comment headers), so
this file keeps checking whatever the documents show. Each command must parse against the real CLI,
name config files that exist, and carry overrides (and sweep grid values) that validate. A few of
them also run end to end with the tiny test models swapped in.
"""

from __future__ import annotations

import itertools
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from fairlora.cli import app
from fairlora.config import build_config, load_config
from fairlora.errors import FairloraError
from fairlora.sweeps import cell_name, grid_cells, parse_grid

ROOT = Path(__file__).parents[1]
README = ROOT / "README.md"
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
DOCS = sorted((ROOT / "docs").glob("*.md"))

# README commands known not to pass -> why, keyed by the command as extracted (continuations joined,
# `# comments` dropped, single spaces). Each is an xfail(strict=True) test: fix the README, then delete
# its entry here.
KNOWN_STALE: dict[str, str] = {}

# Placeholders that stand for one concrete value; a command using only these is checked with them.
PLACEHOLDERS = {"CONFIG": "configs/minilm-identity.yaml", "RUN_DIR": "runs/run", "OUT": "audits/out"}
# What an audit accepts besides run folders (everything else is fixed by the run).
AUDIT_OVERRIDE_PREFIXES = ("audit.", "eval.min_group_size")
# Packaged models -> the tiny random model of the same kind (for the runs below).
TINY_MODELS = {"minilm-l6": "tiny-bert", "smollm2-135m": "tiny-llama"}
TINY_OVERRIDES = [
    "data.identity.examples_per_group=4",
    "eval.splits=[test]",
    "train.progress_bar=false",
]

_START = re.compile(
    r"(?:\$\s+)?(?:[\w./-]*/)?(?:fairlora|accelerate\s+launch|python3?\s+-m\s+fairlora)(?:\s|$)"
)
_FENCE = re.compile(r"^\s*(```|~~~)")
_INLINE = re.compile(r"`([^`]+)`")
_PLACEHOLDER = re.compile(r"(?:[a-z_.]*)[A-Z][A-Z0-9_]*(?:=[A-Z0-9_,.]+)?")
_REPO_FILE = re.compile(r"(?:configs|benchmarks)/[\w./-]+\.(?:ya?ml|py)")


@dataclass(frozen=True)
class Command:
    """One documented command: where it is shown, its text, and the arguments after `fairlora`."""

    where: str  # file:line
    text: str  # as written, continuations joined, whitespace collapsed
    tokens: tuple[str, ...]  # the whole command line, shell-split
    argv: tuple[str, ...]  # the arguments of `fairlora`
    inline: bool = False  # from `inline code` in prose or a table

    @property
    def source(self) -> str:
        """The document the command is shown in."""
        return self.where.rsplit(":", 1)[0]


# ---------------------------------------------------------------- extraction


def fairlora_args(tokens: list[str]) -> list[str] | None:
    """The arguments of `fairlora` in a shell command line, or None when it does not run fairlora."""
    if tokens and Path(tokens[0]).name == "fairlora":
        return tokens[1:]
    for i in range(len(tokens) - 1):
        if tokens[i] == "-m" and tokens[i + 1] == "fairlora":
            return tokens[i + 2 :]
    return None


def parse_command(text: str, where: str, inline: bool = False) -> Command | None:
    """A Command from one (joined) line of a document, or None when the line is not a fairlora command."""
    text = re.sub(r"^\$\s+", "", text.strip())
    if not _START.match(text):
        return None
    if any(is_placeholder(word) for word in text.split()):  # a synopsis line: cut its description
        text = re.split(r"\s{2,}", text)[0]
    text = re.sub(r"\s+", " ", text)
    try:
        tokens = shlex.split(text, comments=True)
    except ValueError:  # unbalanced quotes: prose, not a command
        return None
    argv = fairlora_args(tokens)
    if argv is None:
        return None
    return Command(where, " ".join(tokens), tuple(tokens), tuple(expand_braces(argv)), inline)


def expand_braces(argv: list[str]) -> list[str]:
    """Shell brace expansion of the simple kind: run_{a,b}_x -> run_a_x run_b_x."""
    out = []
    for arg in argv:
        match = re.search(r"\{([^{}]*,[^{}]*)\}", arg)
        if match is None:
            out.append(arg)
            continue
        head, tail = arg[: match.start()], arg[match.end() :]
        out += expand_braces([head + part + tail for part in match.group(1).split(",")])
    return out


def joined_lines(lines: list[str], strip_comment: bool = False) -> Iterator[tuple[int, str]]:
    """(1-based first line number, text) with backslash continuations joined."""
    start, parts = 0, []
    for number, raw in enumerate(lines, 1):
        line = raw.lstrip().removeprefix("#") if strip_comment else raw
        if not parts:
            start = number
        if line.rstrip().endswith("\\"):
            parts.append(line.rstrip()[:-1])
            continue
        parts.append(line)
        yield start, " ".join(parts)
        parts = []
    if parts:
        yield start, " ".join(parts)


def markdown_commands(path: Path) -> list[Command]:
    """Commands in a Markdown file: lines of code blocks, and inline code outside them."""
    name = path.relative_to(ROOT).as_posix()
    lines = path.read_text(encoding="utf-8").splitlines()
    commands, block, in_code = [], [], False
    for number, line in enumerate(lines, 1):
        if _FENCE.match(line):
            if in_code:
                for offset, text in joined_lines([text for _, text in block]):
                    commands.append(parse_command(text, f"{name}:{block[0][0] + offset - 1}"))
            in_code, block = not in_code, []
        elif in_code:
            block.append((number, line))
        else:
            for span in _INLINE.findall(line):
                commands.append(parse_command(span, f"{name}:{number}", inline=True))
    return [c for c in commands if c is not None]


def config_header_commands(path: Path) -> list[Command]:
    """Commands in the comment lines of a YAML config."""
    name = path.relative_to(ROOT).as_posix()
    lines = path.read_text(encoding="utf-8").splitlines()
    comments = [line if line.lstrip().startswith("#") else "" for line in lines]
    found = (parse_command(text, f"{name}:{n}") for n, text in joined_lines(comments, strip_comment=True))
    return [c for c in found if c is not None]


def documented_commands() -> list[Command]:
    """Every fairlora command in README.md, docs/*.md and the headers of configs/*.yaml."""
    commands = markdown_commands(README) if README.is_file() else []
    for path in DOCS:
        commands += markdown_commands(path)
    for path in CONFIGS:
        commands += config_header_commands(path)
    return commands


# ---------------------------------------------------------------- checks


def is_placeholder(token: str) -> bool:
    """A synopsis token: CONFIG, KEY=VALUE, [--opt], models|datasets, ... ."""
    bare = token.strip("[]")
    return (
        token.startswith("[")
        or (token.endswith("]") and "=" not in token)
        or "|" in token
        or bare in ("...", "")
        or bare.endswith("=...")
        or bool(_PLACEHOLDER.fullmatch(bare))
    )


def concrete_argvs(argv: tuple[str, ...]) -> list[list[str]] | None:
    """The concrete commands a documented one stands for, or None for a synopsis line.

    Simple placeholders (CONFIG, RUN_DIR, OUT) get a real value; `a|b|c` alternatives each give one
    command; anything else with placeholders ([...], KEY=VALUE, ...) is a synopsis.
    """
    argv = [PLACEHOLDERS.get(a, a) for a in argv]
    alternatives = []
    for arg in argv:
        options = arg.split("|") if "|" in arg and not arg.startswith(("[", "-")) else [arg]
        if any(is_placeholder(o) for o in options):
            return None
        alternatives.append(options)
    return [list(combo) for combo in itertools.product(*alternatives)]


def _subcommands() -> dict:
    return dict(get_command(app).commands)  # type: ignore[attr-defined]


def _options(command) -> set[str]:
    return {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)} | {"--help"}


def check_synopsis(argv: tuple[str, ...]) -> list[str]:
    """A synopsis line: its subcommand exists and every option it shows is an option of it."""
    commands = _subcommands()
    name = argv[0] if argv else ""
    if is_placeholder(name):  # e.g. `fairlora COMMAND --help`: the options of every command
        targets = list(commands.items())
    elif name in commands:
        targets = [(name, commands[name])]
    else:
        return [f"no command {name!r}; the CLI has: {', '.join(commands)}"]
    problems = []
    for token in argv[1:]:
        option = token.strip("[]").split("=")[0]
        for sub, command in targets:
            if option.startswith("-") and option not in _options(command):
                problems.append(f"`fairlora {sub}` has no option {option!r}")
    return problems


def check_files(tokens: tuple[str, ...]) -> list[str]:
    """Every configs/... or benchmarks/... file the command names exists."""
    names = {m for token in tokens for part in token.split("=") for m in _REPO_FILE.findall(part)}
    return [f"{name} does not exist" for name in sorted(names) if not (ROOT / name).is_file()]


def parse_argv(argv: list[str]) -> tuple[str, dict] | str:
    """(subcommand, parsed parameters), or the CLI's own error message."""
    commands = _subcommands()
    if not argv or argv[0] not in commands:
        given = argv[0] if argv else "(nothing)"
        return f"no command {given!r}; the CLI has: {', '.join(commands)}"
    command = commands[argv[0]]
    if "--help" in argv:
        return argv[0], {}
    try:
        ctx = command.make_context(argv[0], list(argv[1:]))
    except Exception as error:  # click's UsageError, BadParameter, NoSuchOption ...
        return f"does not parse: {getattr(error, 'format_message', error.__str__)()}"
    return argv[0], dict(ctx.params)


def _config(path: object) -> Path | None:
    return None if path is None else ROOT / Path(str(path))


def check_semantics(name: str, params: dict) -> list[str]:
    """Overrides and grid values validate against the config they apply to."""
    overrides = list(params.get("overrides") or [])
    try:
        if name == "train":
            load_config(_config(params["config"]), overrides)
        elif name == "sweep":
            config = _config(params["config"])
            load_config(config, overrides)
            for key, values in parse_grid(list(params["grid"])).items():
                for value in values:
                    load_config(config, [*overrides, f"{key}={value}"])
        elif name == "audit":
            targets = list(params["targets"] or [])
            audit_overrides = [t for t in targets if "=" in t]
            problems = [
                f"override {o!r}: an audit takes only audit.* and eval.min_group_size"
                for o in audit_overrides
                if not o.startswith(AUDIT_OVERRIDE_PREFIXES)
            ]
            if len(audit_overrides) == len(targets) and not params.get("predictions"):
                problems.append("no run folder or --predictions table to audit")
            config = _config(params.get("config"))  # if the audit ever takes a --config FILE
            if config is not None and not config.is_file():
                problems.append(f"{params['config']} does not exist")
            load_config(None, audit_overrides)
            return problems
        elif name == "demo":
            from fairlora.demo import demo_config

            for method in params["methods"].split(","):
                build_config(demo_config(), [*overrides, f"method={method}"])
    except FairloraError as error:
        return [str(error)]
    except Exception as error:  # a crash is a finding too: the CLI would show a traceback
        return [f"crashes: {type(error).__name__}: {error}"]
    return []


def check_command(command: Command) -> list[str]:
    """Everything wrong with one documented command (empty when it is fine)."""
    if command.inline and len(command.argv) == 1 and not is_placeholder(command.argv[0]):
        # a mention such as `fairlora train` in prose names a command, it does not run one
        commands = _subcommands()
        return [] if command.argv[0] in commands else [f"no command {command.argv[0]!r}"]
    problems = check_files(command.tokens)
    argvs = concrete_argvs(command.argv)
    if argvs is None:
        return problems + check_synopsis(command.argv)
    for argv in argvs:
        parsed = parse_argv(argv)
        if isinstance(parsed, str):
            problems.append(parsed)
            continue
        problems += check_semantics(*parsed)
    return problems


def _param(command: Command):
    marks = ()
    if command.text in KNOWN_STALE:
        marks = (pytest.mark.xfail(strict=True, reason=KNOWN_STALE[command.text]),)
    return pytest.param(command, marks=marks, id=f"{command.where} {command.text[:60]}")


COMMANDS = documented_commands()


@pytest.mark.parametrize("command", [_param(c) for c in COMMANDS])
def test_documented_command_is_valid(command: Command):
    problems = check_command(command)
    assert not problems, f"{command.where}: `{command.text}`\n  " + "\n  ".join(problems)


# ---------------------------------------------------------------- the checker itself


def test_commands_are_found_in_the_readme_and_every_config():
    sources = {c.source for c in COMMANDS}
    assert "README.md" in sources
    for path in CONFIGS:
        name = path.relative_to(ROOT).as_posix()
        shown = [c for c in COMMANDS if c.source == name]
        assert any(name in c.tokens for c in shown), f"{name}: its header shows no command that uses it"


def test_known_stale_commands_are_still_in_the_readme():
    shown = {c.text for c in COMMANDS}
    gone = [text for text in KNOWN_STALE if text not in shown]
    assert not gone, f"no longer in the README, remove from KNOWN_STALE: {gone}"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("fairlora sweep configs/rank-sweep.yaml lora.r=1,2", "Missing option '--grid'"),
        ("fairlora sweep configs/rank-sweep.yaml --grid lora.r=1,2 seed=13,42", "seed: Input should be"),
        ("fairlora sweep configs/rank-sweep.yaml --grid lora.r=1,0", "lora.r: Input should be greater"),
        ("fairlora sweep configs/rank-sweep.yaml --grid seed=1 --grid seed=2", "given twice"),
        ("fairlora train configs/no-such-config.yaml", "configs/no-such-config.yaml does not exist"),
        ("fairlora train configs/minilm-identity.yaml lora.rnk=4", "lora.rnk: unknown key"),
        ("fairlora train configs/minilm-identity.yaml --overwrit", "No such option"),
        ("fairlora train", "Missing argument 'config'"),
        ("fairlora audit runs/a lora.r=4 -o audits/a", "an audit takes only audit.*"),
        ("fairlora audit runs/a audit.n_boot=-1 -o audits/a", "audit.n_boot"),
        ("fairlora audit runs/a runs/b", "Missing option '--output'"),
        ("fairlora demo --methods lora,magic", "magic"),
        ("fairlora trian configs/minilm-identity.yaml", "no command 'trian'"),
        ("fairlora list model", "does not parse"),
        ("fairlora train CONFIG [KEY=VALUE ...] [--overwite]", "has no option '--overwite'"),
        ("fairlora COMMAND --hepl", "has no option '--hepl'"),
        (
            "accelerate launch --config_file configs/accelerate/none.yaml -m fairlora train CONFIG",
            "configs/accelerate/none.yaml does not exist",
        ),
    ],
)
def test_checker_reports_a_broken_command(text, message):
    command = parse_command(text, "test:1")
    assert command is not None
    problems = "\n".join(check_command(command))
    assert message.lower() in problems.lower()  # click capitalises names in some releases


def test_checker_accepts_the_documented_forms():
    for text in [
        "$ .venv/bin/fairlora train configs/minilm-identity.yaml lora.r=4   # a comment",
        "fairlora sweep configs/rank-sweep.yaml --grid lora.r=1,2 -g seed=13,42 train.lr=1e-4",
        "accelerate launch --config_file configs/accelerate/ddp_cpu.yaml -m fairlora train CONFIG",
        "fairlora audit runs/a runs/b audit.sections=[utility] eval.min_group_size=5 -o out",
        "fairlora list models|datasets|methods",
        "fairlora demo [--methods none,lora,full] [--output-dir runs/demo] [--no-audit] [KEY=VALUE ...]",
    ]:
        command = parse_command(text, "test:1")
        assert command is not None and check_command(command) == [], text


def test_extraction_of_blocks_continuations_comments_and_tables(tmp_path, monkeypatch):
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    doc = tmp_path / "doc.md"
    doc.write_text(
        "Run `fairlora list models` or see `fairlora.train`.\n"
        "| a | `fairlora eval runs/x` |\n"
        "```bash\n"
        "$ fairlora sweep c.yaml \\\n"
        "    --grid lora.r=1,2   # two cells\n"
        "import fairlora\n"
        "```\n",
        encoding="utf-8",
    )
    found = [(c.where, c.argv) for c in markdown_commands(doc)]
    assert found == [
        ("doc.md:1", ("list", "models")),
        ("doc.md:2", ("eval", "runs/x")),
        ("doc.md:4", ("sweep", "c.yaml", "--grid", "lora.r=1,2")),
    ]
    config = tmp_path / "c.yaml"
    config.write_text(
        "# about\n#   fairlora audit runs/r_{a,b} \\\n#     -o out\nname: x  # fairlora not a command\n"
    )
    assert [(c.where, c.argv) for c in config_header_commands(config)] == [
        ("c.yaml:2", ("audit", "runs/r_a", "runs/r_b", "-o", "out"))
    ]


# ---------------------------------------------------------------- the config headers as pipelines


def _produced_runs(command: Command) -> dict[str, dict[str, str]]:
    """Run folders a train or sweep command writes (as a header names them) -> their grid cell."""
    parsed = parse_argv(list(command.argv))
    if isinstance(parsed, str) or parsed[0] not in ("train", "sweep"):
        return {}
    name, params = parsed
    cfg = load_config(_config(params["config"]), list(params["overrides"] or []))
    if name == "train":
        return {f"{cfg.output_dir}/{cfg.name}": {}}
    out_dir = f"{cfg.output_dir}/{cfg.name}-sweep"
    cells = grid_cells(parse_grid(params["grid"]))
    return {f"{out_dir}/{cell_name(cfg.name, cell)}": cell for cell in cells}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_header_audits_name_runs_the_header_trains(path):
    produced: set[str] = set()
    for command in config_header_commands(path):
        parsed = parse_argv(list(command.argv))
        if not isinstance(parsed, str) and parsed[0] == "audit":
            runs = [t for t in parsed[1]["targets"] if "=" not in t]
            missing = [r for r in runs if r.rstrip("/") not in produced]
            assert not missing, f"{command.where}: no command above it trains {missing}"
        produced |= set(_produced_runs(command))


# ---------------------------------------------------------------- a few commands run for real


def _tiny(argv: list[str], config: Path, out: Path, steps: int) -> list[str]:
    """The command with the tiny model of the same kind, a few steps and a temporary output folder."""
    model = load_config(config).model.name
    tiny = [f"model.name={TINY_MODELS.get(model, model)}", f"train.max_steps={steps}", *TINY_OVERRIDES]
    return [*argv, *tiny, f"output_dir={out}"]


def _first(source: str, name: str, data: str = "identity") -> Command:
    for command in COMMANDS:
        argvs = concrete_argvs(command.argv)
        if command.source != source or not argvs or argvs[0][0] != name:
            continue
        parsed = parse_argv(argvs[0])
        if not isinstance(parsed, str) and load_config(_config(parsed[1]["config"])).data.name == data:
            return command
    raise AssertionError(f"{source} shows no `fairlora {name}` on {data} data to run")


def _invoke(argv: list[str]):
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 0, f"fairlora {' '.join(argv)}\n{result.output}"
    return result


def test_readme_train_and_eval_run(tmp_path):
    argv = list(_first("README.md", "train").argv)
    argv[1] = str(ROOT / argv[1])
    _invoke(_tiny(argv, ROOT / argv[1], tmp_path, steps=2))
    run_dir = tmp_path / load_config(argv[1], argv[2:]).name
    assert (run_dir / "results.json").is_file()
    assert "overall" in _invoke(["eval", str(run_dir)]).output


def _sweep_argv(command: Command, grid: dict[str, list[str]]) -> list[str]:
    """A header's sweep command with another grid and the config's full path."""
    _, params = parse_argv(list(command.argv))  # type: ignore[misc]
    grids = [a for key, values in grid.items() for a in ("--grid", f"{key}={','.join(values)}")]
    return ["sweep", str(ROOT / params["config"]), *grids, *(params["overrides"] or [])]


def test_config_header_sweep_runs_its_first_cell(tmp_path):
    command = _first("configs/rank-sweep.yaml", "sweep")
    _, params = parse_argv(list(command.argv))  # type: ignore[misc]
    config = ROOT / params["config"]
    first = {key: values[:1] for key, values in parse_grid(params["grid"]).items()}
    _invoke(_tiny(_sweep_argv(command, first), config, tmp_path, steps=1))
    cfg = load_config(config, list(params["overrides"] or []))
    assert (tmp_path / f"{cfg.name}-sweep" / "sweep.json").is_file()


def test_study_header_runs_as_written(tmp_path):
    """The study's sweeps, then the audit of their runs, in the header's order (tiny, generated data).

    Each sweep trains only the cells the audit reads: the audit finds them under the names it shows.
    """
    commands = config_header_commands(ROOT / "configs/study-hate.yaml")
    audited = {a for c in commands if c.argv[0] == "audit" for a in c.argv if a.startswith("runs/")}
    assert audited, "configs/study-hate.yaml: its header shows no audit"
    for command in commands:
        argv = list(command.argv)
        if argv[0] in ("train", "sweep"):
            cells = [cell for run, cell in _produced_runs(command).items() if run in audited]
            assert cells, f"{command.where}: the header audits none of its runs"
            config = ROOT / argv[1]
            if argv[0] == "sweep":
                argv = _sweep_argv(command, {k: list(dict.fromkeys(c[k] for c in cells)) for k in cells[0]})
            argv[1] = str(config)
            tiny = _tiny(argv, config, tmp_path / "runs", steps=1)
            _invoke([*tiny, "data.name=identity", "eval.splits=[test,train]"])
        elif argv[0] == "audit":
            argv = [str(tmp_path / a) if a.startswith(("runs/", "audits/")) else a for a in argv]
            _invoke([*argv, "audit.n_boot=20"])
            assert (tmp_path / argv[argv.index("-o") + 1] / "results.json").is_file()
