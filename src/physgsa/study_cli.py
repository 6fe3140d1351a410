"""``physgsa study``: one page and one table across several models or result directories."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List

import typer

__all__ = ["register"]


def register(app: typer.Typer, errors, fail) -> None:
    """Add the ``study`` command to ``app`` (``errors``: the CLI's one-line error context)."""

    @app.command()
    def study(
        models: List[str] = typer.Argument(..., help="Models (anything certify accepts: bundled names, folders, "
                                           "files, hub ids in the local cache) and result directories written "
                                           "by certify (read back, never recomputed)."),
        out: Path = typer.Option(..., "--out", "-o", help="Output directory for study.html, study.parquet, "
                                 "figures/ and runs/ (each model's own certify output)."),
        random_control: bool = typer.Option(False, "--random-control", help="Also certify each model's "
                                            "architecture with seeded random weights, shown beside it."),
        seed: int = typer.Option(0, help="Seed of the random weights of --random-control (0: for the networks "
                                 "physgsa trains, the weights their training started from)."),
        keep_others: bool = typer.Option(False, "--keep-others", help="Write into an --out that holds files "
                                         "physgsa did not write, leaving them untouched (otherwise refused)."),
        as_json: bool = typer.Option(False, "--json", help="Print one line of JSON per model on stdout."),
        quiet: bool = typer.Option(False, "--quiet", help="No progress and no summary line (errors still show)."),
    ) -> None:
        """Compare several models on one page: verdicts, margins, profiles, shares and heatmaps.

        Each model is certified with the default parameters into OUT/runs/NAME/ (a rerun reads
        it back when the model and parameters are unchanged); a result directory of certify is
        read as it is. Writes OUT/study.parquet (one row per model-interface), OUT/study.html
        and every panel as OUT/figures/study-*.svg.

        Examples:

          physgsa study minilm digits-resnet digits-vit digits-diffusion pysource-gpt --random-control --out study/

          physgsa study out-a/ out-b/ --out study/
        """
        from . import cli
        from .runs.study import study as run_study

        def say(line: str) -> None:
            if not quiet:
                typer.echo(line, err=True)

        with errors(), cli._library_output(quiet):
            with cli._Progress(quiet) as progress:
                res = run_study(models, out, random_control=random_control, seed=seed, keep_others=keep_others,
                                progress=progress, say=say)
        if as_json:
            for e in res.entries:
                v = e.result.certificate.get("verdict", {})
                typer.echo(json.dumps({"model": e.label, "family": e.family, "architecture": e.architecture,
                                       "weights": e.weights, "n_interfaces": v.get("n_interfaces"),
                                       "n_members": v.get("n_members"),
                                       "n_no_channel_structure": v.get("n_no_channel_structure")}, sort_keys=True))
        elif not quiet:
            n = len(res.entries)
            typer.echo(f"{n} model{'s' * (n != 1)}, {int(res.table['interface'].notna().sum())} interfaces; "
                       f"wrote {out}/study.html")
