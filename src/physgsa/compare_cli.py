"""``physgsa compare``: certified drift of one or more models, or of a simulated change, against a base."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

__all__ = ["register"]


def _chain(spec: str):
    from .api import chain_from

    return chain_from(spec)


def register(app: typer.Typer, errors, fail) -> None:
    """Add the ``compare`` command to ``app`` (``errors``: the CLI's one-line error context)."""

    @app.command()
    def compare(
        base: str = typer.Argument(..., help="The base model or chain (anything certify accepts)."),
        others: Optional[List[str]] = typer.Argument(None, help="Models of the same layout, in order (e.g. the "
                                                               "checkpoints of a training run)."),
        out: Path = typer.Option(..., "--out", "-o", help="Output directory for compare.parquet, "
                                 "compare_factors.parquet, compare.json and compare.html."),
        quantize: Optional[str] = typer.Option(None, help="Compare the base with itself quantized: int8, int4, "
                                               "fp8, bf16 or fp16 (symmetric round-to-nearest)."),
        group_size: Optional[int] = typer.Option(None, "--group-size", help="Quantize in groups of this many "
                                                 "input entries per output channel."),
        granularity: Optional[str] = typer.Option(None, help="Quantization scale per tensor or per channel "
                                                  "(default: channel)."),
        prune: Optional[str] = typer.Option(None, help="Compare with the base pruned: magnitude:FRACTION."),
        noise: Optional[float] = typer.Option(None, help="Compare with the base plus Gaussian noise of this "
                                              "relative Frobenius size."),
        q: float = typer.Option(0.9, help="Energy quantile of the effective rank k_q, in (0, 1)."),
        groups: str = typer.Option("auto", help="Row groups: auto, kmeans, modes or heads."),
        threshold: str = typer.Option("gap", help="Support thresholds: gap, gap_zero or relative."),
        seed: int = typer.Option(0, help="Seed of every random choice (groups, noise)."),
        keep_others: bool = typer.Option(False, "--keep-others", help="Write beside files physgsa did not write."),
        quiet: bool = typer.Option(False, "--quiet", help="No summary line."),
    ) -> None:
        """Is the other model's channel structure certified the same as the base's?

        Examples:

          physgsa compare minilm --quantize int4 --group-size 128 --out cmp/

          physgsa compare digits-resnet --prune magnitude:0.5 --out cmp/

          physgsa compare epoch1.npz epoch2.npz epoch3.npz --out traj/
        """
        from .runs.compare import compare_chains
        from .core.perturb import changed_chain, parse_change

        with errors():
            simulated = any(v is not None for v in (quantize, prune, noise))
            if simulated and others:
                fail("Give other models or one simulated change (--quantize, --prune, --noise), not both.", 2)
            if not simulated and not others:
                fail("Give at least one other model, or a simulated change: --quantize FORMAT, --prune "
                     "magnitude:FRACTION or --noise REL.", 2)
            if simulated:
                change = parse_change(quantize=quantize, group_size=group_size, granularity=granularity, prune=prune,
                                      noise=noise, seed=seed)
                from .api import _is_matrix_file

                if base == "example" or _is_matrix_file(base):
                    base_chain = _chain(base)
                    pairs = [(change.label(), changed_chain(base_chain, change))]
                else:
                    from .models import load_chain
                    from .models.changed import ChangedSource
                    from .models.sources import resolve_source

                    base_chain = load_chain(base)
                    pairs = [(change.label(), load_chain(ChangedSource(resolve_source(base), change)))]
            else:
                base_chain = _chain(base)
                pairs = [(o, _chain(o)) for o in others]
            res = compare_chains(base_chain, pairs, q=q, groups=groups, threshold=threshold, seed=seed)
            if simulated:
                res.document["change"] = change.record()
            res.save(out, keep_others=keep_others)
        if not quiet:
            ifs = res.interfaces
            typer.echo(f"{int(ifs['certified'].sum())} of {len(ifs)} interfaces certified the same, "
                       f"{int((~ifs['direct_same']).sum())} changed by the direct check; wrote {out}/")
