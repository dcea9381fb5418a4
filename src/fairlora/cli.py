"""The `fairlora` command line: train, eval, audit, report, sweep, export, collab, demo, list."""

from __future__ import annotations

import os
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from fairlora.errors import FairloraError

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


@app.command()
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
) -> None:
    """Evaluate a finished run again from its saved weights (rewrites its results)."""
    from fairlora.pipeline import evaluate_run
    from fairlora.report.tables import run_table

    try:
        result = evaluate_run(run_dir)
    except FairloraError as error:
        raise _fail(error) from None
    for split in result.splits:
        console.print(run_table(result, split))


@app.command()
def audit(
    targets: Annotated[
        list[str],
        typer.Argument(help="run folders to compare (the first is the reference), then audit.* k=v"),
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="folder for results.json and the report")],
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", "-c", help="YAML whose audit: section sets the audit (audit.* overrides win)"
        ),
    ] = None,
) -> None:
    """Audit runs per group (utility, calibration, membership, ...) and write a report comparing them."""
    from fairlora.auditing.run import audit as run_audit
    from fairlora.report.tables import audit_tables

    run_dirs = [t for t in targets if "=" not in t]
    overrides = [t for t in targets if "=" in t]
    try:
        result = run_audit(run_dirs, output, overrides, config_file=config)
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


@app.command()
def sweep(
    config: Annotated[Path, typer.Argument(help="YAML run config, the base of every cell")],
    grid: Annotated[
        list[str],
        typer.Option("--grid", "-g", help="key=v1,v2,... (repeat for more keys), e.g. lora.r=1,8,64"),
    ],
    overrides: Annotated[list[str] | None, typer.Argument(help="key=value overrides for every cell")] = None,
) -> None:
    """Train a grid of runs (finished cells are skipped) and tabulate mean +- std over seeds."""
    from fairlora.report.tables import sweep_table
    from fairlora.sweeps import sweep as run_sweep

    try:
        result = run_sweep(config, grid, overrides or [])
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


class Listable(str, Enum):
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
