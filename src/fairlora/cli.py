"""The `fairlora` command line: train, eval, audit, report, sweep, export, collab, demo, list."""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from fairlora.errors import ConfigError, FairloraError

app = typer.Typer(
    name="fairlora",
    help="Fair, efficient and collaborative low-rank adaptation of language models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console()
errors = Console(stderr=True)


def _fail(error: FairloraError) -> typer.Exit:
    errors.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
    return typer.Exit(code=error.exit_code)


KEYS_HELP = (
    "Every key, with its default: `fairlora config show CONFIG key=value ...` prints the resolved "
    "config as YAML (all sections, method sections included); the README's Config reference explains each."
)


@app.command(epilog=KEYS_HELP)
def train(
    config: Annotated[Path, typer.Argument(help="YAML run config (see configs/)")],
    overrides: Annotated[list[str] | None, typer.Argument(help="key=value overrides, e.g. lora.r=4")] = None,
    overwrite: Annotated[bool, typer.Option(help="replace an existing run folder")] = False,
    resume: Annotated[bool, typer.Option(help="continue an unfinished run from its last checkpoint")] = False,
) -> None:
    """Fine-tune a model with the configured method, then evaluate it per group."""
    from fairlora.pipeline import train as run_train
    from fairlora.report.tables import run_table

    try:
        result = run_train(config, overrides or [], overwrite=overwrite, resume=resume)
    except FairloraError as error:
        raise _fail(error) from None
    if int(os.environ.get("RANK", "0")) == 0:  # under accelerate/torchrun only the main process prints
        for split in result.splits:
            console.print(run_table(result, split))
        console.print(f"results: {result.run_dir}")


@app.command("eval")
def evaluate(
    run_dir: Annotated[Path, typer.Argument(help="a run folder written by `fairlora train`")],
    overrides: Annotated[
        list[str] | None,
        typer.Argument(
            help="with --data: data.* / eval.* / model.max_length key=value, e.g. data.label_column=y"
        ),
    ] = None,
    data: Annotated[
        str | None,
        typer.Option(
            "--data",
            help="evaluate on other data: a dataset name (fairlora list datasets), a .csv/.jsonl/.parquet "
            "file, an HF dataset id, or a YAML file with a data: section",
        ),
    ] = None,
    set_name: Annotated[
        str | None,
        typer.Option("--as", help="name of the evaluation set, RUN/evals/<name>/ (default: the data's)"),
    ] = None,
    label_map: Annotated[
        str | None,
        typer.Option(
            help="the data's labels -> the run's classes (ids or names), e.g. hateful=1,non-hateful=0"
        ),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="replace an evaluation set of the same --as name")] = False,
) -> None:
    """Evaluate a finished run again from its saved weights, or on other data (--data) as an extra set."""
    from fairlora.evalsets import evaluate_on
    from fairlora.pipeline import evaluate_run
    from fairlora.report.tables import run_table

    other = data is not None or overrides or set_name is not None or label_map is not None
    try:
        if other:
            result = evaluate_on(
                run_dir, data, overrides or [], name=set_name, label_map=label_map, overwrite=overwrite
            )
        else:
            result = evaluate_run(run_dir)
    except FairloraError as error:
        raise _fail(error) from None
    for split in result.splits:
        console.print(run_table(result, split))
    if other:
        console.print(f"evaluation set: {result.run_dir} (audit it with `fairlora audit {run_dir} -o ...`)")


def _table_option(help_text: str, *names: str) -> Any:
    """An option of `fairlora audit --predictions`, listed under its own help panel."""
    return typer.Option(*names, help=help_text, rich_help_panel="Predictions table")


@app.command()
def audit(
    output: Annotated[Path, typer.Option("--output", "-o", help="folder for results.json and the report")],
    targets: Annotated[
        list[str] | None,
        typer.Argument(help="run folders to compare (the first is the reference), then audit.* k=v"),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", "-c", help="YAML whose audit: section sets the audit (audit.* overrides win)"
        ),
    ] = None,
    predictions: Annotated[
        list[str] | None,
        _table_option(
            "any model's predictions, \\[name=]FILE (.csv/.jsonl/.parquet); repeat to compare models",
            "--predictions",
            "-p",
        ),
    ] = None,
    label: Annotated[str, _table_option("label column")] = "label",
    prob: Annotated[str | None, _table_option("binary: P(positive) column (labels 0/1)")] = None,
    prob_prefix: Annotated[
        str | None, _table_option("one P(class) column per class: <prefix><class>")
    ] = None,
    group: Annotated[
        list[str] | None,
        _table_option("sensitive feature column (boolean or categorical); repeat", "--group", "-g"),
    ] = None,
    intersect: Annotated[list[str] | None, _table_option("crossed groups of columns a,b; repeat")] = None,
    pred: Annotated[
        str | None, _table_option("decision column (default: P >= --threshold, or argmax)")
    ] = None,
    threshold: Annotated[float, _table_option("binary: decision threshold on --prob")] = 0.5,
    positive: Annotated[
        str | None, _table_option("--prob-prefix with two classes: the positive class")
    ] = None,
    id_column: Annotated[
        str | None, _table_option("unique row id column (pairs tables in comparisons)", "--id")
    ] = None,
    member: Annotated[
        str | None, _table_option("loss attack: true for rows the model trained on (needs --loss)")
    ] = None,
    loss: Annotated[
        str | None, _table_option("per-row loss column (default: cross-entropy of the probabilities)")
    ] = None,
) -> None:
    """Audit runs or any model's predictions per group and write a report comparing them."""
    from fairlora.auditing.predictions import prediction_columns, read_predictions_file
    from fairlora.auditing.run import audit as run_audit
    from fairlora.report.tables import audit_tables

    targets = targets or []
    run_dirs = [t for t in targets if "=" not in t]
    overrides = [t for t in targets if "=" in t]
    try:
        tables = []
        if predictions:
            columns = prediction_columns(
                label=label,
                prob=prob,
                prob_prefix=prob_prefix,
                groups=group or [],
                pred=pred,
                intersections=[spec.split(",") for spec in intersect or []],
                threshold=threshold,
                positive=positive,
                id=id_column,
                member=member,
                loss=loss,
            )
            tables = [read_predictions_file(spec, columns) for spec in predictions]
        elif prob or prob_prefix or group or intersect or member:
            raise ConfigError(
                "--prob, --prob-prefix, --group, --intersect and --member describe --predictions FILE; add it"
            )
        result = run_audit(run_dirs, output, overrides, config_file=config, predictions=tables)
    except FairloraError as error:
        raise _fail(error) from None
    for table in audit_tables(result):
        console.print(table)
    for run in result.runs:
        for note in run.notes:
            console.print(f"[yellow]{run.name}:[/] {note}", highlight=False)
    console.print(f"report: {output / 'report.html'}  (results.json, report.md next to it)")


@app.command()
def report(
    audit_dir: Annotated[Path, typer.Argument(help="a folder written by `fairlora audit`")],
) -> None:
    """Render report.html and report.md again from an audit's results.json."""
    from fairlora.auditing.results import load_audit
    from fairlora.report.html import write_report

    try:
        paths = write_report(load_audit(audit_dir), audit_dir)
    except FairloraError as error:
        raise _fail(error) from None
    console.print("written: " + ", ".join(str(p) for p in paths.values()))


class SweepEngine(StrEnum):
    """Where `fairlora sweep` trains its cells."""

    sequential = "sequential"
    ray = "ray"


@app.command()
def sweep(
    config: Annotated[Path, typer.Argument(help="YAML run config, the base of every cell")],
    grid: Annotated[
        list[str],
        typer.Option("--grid", "-g", help="key=v1,v2,... (repeat for more keys), e.g. lora.r=1,8,64"),
    ],
    overrides: Annotated[list[str] | None, typer.Argument(help="key=value overrides for every cell")] = None,
    engine: Annotated[
        SweepEngine, typer.Option(help="ray: each cell a Ray task on a cluster (pip install fairlora\\[ray])")
    ] = SweepEngine.sequential,
    address: Annotated[
        str | None, typer.Option(help="--engine ray: auto, ray://HOST:PORT (default: RAY_ADDRESS or local)")
    ] = None,
    cpus_per_run: Annotated[float, typer.Option(min=0, help="--engine ray: CPUs each cell reserves")] = 1.0,
    gpus_per_run: Annotated[float, typer.Option(min=0, help="--engine ray: GPUs each cell reserves")] = 0.0,
) -> None:
    """Train a grid of runs (finished cells are skipped) and tabulate mean +- std over seeds."""
    from fairlora.ray_engine import RayOptions
    from fairlora.report.tables import sweep_table
    from fairlora.sweeps import sweep as run_sweep

    try:
        if engine != SweepEngine.ray and (address is not None or cpus_per_run != 1.0 or gpus_per_run != 0.0):
            raise ConfigError("--address, --cpus-per-run and --gpus-per-run need --engine ray")
        options = RayOptions(address, cpus_per_run, gpus_per_run)
        result = run_sweep(config, grid, overrides or [], engine=engine.value, ray_options=options)
    except FairloraError as error:
        raise _fail(error) from None
    console.print(sweep_table(result.summary))
    console.print(f"sweep: {result.out_dir} (sweep.json, sweep.md)")


@app.command()
def export(
    run_dir: Annotated[Path, typer.Argument(help="a run folder written by `fairlora train`")],
    output: Annotated[Path, typer.Option("--output", "-o", help="folder to write")],
    merge: Annotated[
        bool, typer.Option(help="merge the adapter into the base weights: a plain transformers model folder")
    ] = False,
    overwrite: Annotated[bool, typer.Option(help="replace an existing output folder")] = False,
) -> None:
    """Export a run's adapter in PEFT format, or merged into the base model (--merge)."""
    from fairlora.export import export_run

    try:
        written = export_run(run_dir, output, merge=merge, overwrite=overwrite)
    except FairloraError as error:
        raise _fail(error) from None
    console.print(f"exported: {written}")


@app.command()
def collab(
    config: Annotated[Path, typer.Argument(help="YAML collaboration config (see configs/collab-*.yaml)")],
    overrides: Annotated[
        list[str] | None, typer.Argument(help="key=value overrides, e.g. trust=naive")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="replace an existing collaboration folder")] = False,
    resume: Annotated[bool, typer.Option(help="continue a killed run from its last completed round")] = False,
    flower_app: Annotated[
        Path | None,
        typer.Option(help="write a Flower App for `flwr run DIR <federation>` here instead of running"),
    ] = None,
) -> None:
    """Personalised collaborative fine-tuning: N clients on one base, trust-weighted mixing of adapters."""
    from fairlora.collab.command import run_command, write_flower_app

    try:
        if flower_app is not None:
            write_flower_app(config, overrides or [], flower_app, console=console)
            return
        run_command(config, overrides or [], overwrite=overwrite, resume=resume, console=console)
    except FairloraError as error:
        raise _fail(error) from None


@app.command()
def demo(
    output_dir: Annotated[Path, typer.Option(help="where the demo runs are written")] = Path("runs/demo"),
    methods: Annotated[str, typer.Option(help="comma-separated methods to compare")] = "none,lora,full",
    audit: Annotated[bool, typer.Option(help="audit the runs and write a report comparing them")] = True,
    overrides: Annotated[list[str] | None, typer.Argument(help="key=value overrides for every run")] = None,
) -> None:
    """Train LoRA and full fine-tuning of MiniLM on biased generated data; audit and compare per group."""
    from fairlora.demo import run_demo
    from fairlora.report.tables import comparison_table

    try:
        results = run_demo(output_dir, methods.split(","), overrides or [])
    except FairloraError as error:
        raise _fail(error) from None
    for metric in ("accuracy", "fpr"):
        console.print(comparison_table(results, "test", metric))
    if audit:
        from fairlora.demo import audit_demo
        from fairlora.report.tables import audit_tables

        try:
            audited = audit_demo(results, output_dir)
        except FairloraError as error:
            raise _fail(error) from None
        for table in audit_tables(audited):
            if not str(table.title).startswith("utility/"):  # utility is shown above
                console.print(table)
        console.print(f"report: {output_dir / 'audit' / 'report.html'}")


config_app = typer.Typer(help="Inspect run configs.", no_args_is_help=True)
app.add_typer(config_app, name="config")


@config_app.command("show")
def config_show(
    config: Annotated[str | None, typer.Argument(help="YAML run config (none: the defaults)")] = None,
    overrides: Annotated[list[str] | None, typer.Argument(help="key=value overrides, e.g. lora.r=4")] = None,
) -> None:
    """Print the resolved run config as YAML: every key of every section, defaults filled in."""
    from fairlora.config import load_config

    overrides = list(overrides or [])
    if config is not None and "=" in config and not Path(config).is_file():
        config, overrides = None, [config, *overrides]  # only overrides were given
    try:
        resolved = load_config(config, overrides)
    except FairloraError as error:
        raise _fail(error) from None
    typer.echo(resolved.to_yaml(), nl=False)


class Listable(StrEnum):
    """What `fairlora list` can show."""

    models = "models"
    datasets = "datasets"
    methods = "methods"
    tasks = "tasks"


@app.command("list")
def list_items(what: Annotated[Listable, typer.Argument(help="models, datasets, methods or tasks")]) -> None:
    """List packaged models, registered datasets, fine-tuning methods or tasks."""
    table = Table("name", "description", title=what.value, title_justify="left")
    for name, description in _listing(what):
        table.add_row(name, description)
    console.print(table)


def _listing(what: Listable) -> list[tuple[str, str]]:
    if what is Listable.models:
        from fairlora.models import list_models

        return [(m.name, f"[{m.kind}] {m.description}") for m in list_models()]
    if what is Listable.datasets:
        from fairlora.data import list_datasets

        return [(d.name, f"{d.description} ({d.source})") for d in list_datasets()]
    if what is Listable.tasks:
        from fairlora.tasks import get_task, task_names

        return [(name, get_task(name).description) for name in task_names()]
    from fairlora.methods import describe_methods

    return list(describe_methods().items())


def main() -> None:
    """Entry point of the `fairlora` script."""
    app()
