"""`qpatch eval` and `qpatch sweep`: quality per bit, measured with the pin's llama-perplexity."""

from __future__ import annotations

import click

_FORMATS = click.Choice(["table", "json", "csv"])


def _settings_options(f):
    for opt in reversed((
        click.option("--text", required=True, type=click.Path(dir_okay=False),
                     help="held-out text to measure on (the model must not have trained on it)"),
        click.option("--ctx", type=click.IntRange(min=16), default=512, show_default=True, help="context per chunk"),
        click.option("--chunks", type=click.IntRange(min=1), help="chunks of the text to use [default: all]"),
        click.option("--backend", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
                     help="which build's llama-perplexity (cuda offloads every layer)"),
        click.option("--threads", type=click.IntRange(min=1), help="CPU threads [default: all cores]"),
        click.option("--dir", "checkout", type=click.Path(file_okay=False),
                     help="the llama.cpp checkout  [default: llama.cpp/ in the project]"),
        click.option("--format", "fmt", type=_FORMATS, default="table", show_default=True),
        click.option("--plot", type=click.Path(dir_okay=False), help="also draw size against mean KLD into this PNG"),
    )):
        f = opt(f)
    return f


def _checkout_dir(checkout):
    from qpatch.shipped import default_checkout

    return checkout or default_checkout()


def _emit(base: dict, rows: list[dict], fmt: str, plot, extra: dict | None = None, title: str | None = None):
    from qpatch.quality import tables

    if fmt == "json":
        click.echo(tables.to_json(base, rows, extra))
    elif fmt == "csv":
        click.echo(tables.to_csv(rows), nl=False)
    else:
        click.echo(tables.table(base, rows))
    if plot:
        click.echo(f"plot: {tables.plot(base, rows, plot, title)}", err=True)


@click.command("eval")
@click.argument("base", type=click.Path(dir_okay=False, exists=True))
@click.argument("quants", nargs=-1, required=True, type=click.Path(dir_okay=False, exists=True))
@_settings_options
def eval_cmd(base, quants, text, ctx, chunks, backend, threads, checkout, fmt, plot):
    """PPL and KL divergence of each QUANT against BASE, the unquantized model, with the checkout's llama-perplexity.

    BASE's log-probabilities are computed once and cached (keyed by the content of model and text,
    and the settings); each quant is then compared with them.
    """
    from qpatch.cli.progress import ClickProgress
    from qpatch.quality import evaluation, tables

    if plot:
        tables.require_plotting()
    settings = evaluation.Settings(ctx=ctx, chunks=chunks, backend=backend, threads=threads)
    rep = evaluation.evaluate(base, list(quants), text, checkout=_checkout_dir(checkout), settings=settings,
                              progress=ClickProgress())
    d = rep.as_dict()
    rows = [{"name": click.format_filename(r["path"]).rsplit("/", 1)[-1], **r} for r in d["quants"]]
    b = {"name": d["base"]["path"].rsplit("/", 1)[-1], **d["base"]}
    _emit(b, rows, fmt, plot, {"text": d["text"], "settings": d["settings"], "llama_perplexity": d["llama_perplexity"]})


@click.command("sweep")
@click.argument("model", type=click.Path(dir_okay=False, exists=True))
@click.option("--policies", "-p", required=True, metavar="P,...", help="policies to compare, e.g. stock,deepseek-v3")
@click.option("--ftypes", "-f", required=True, metavar="F,...", help="ftypes, e.g. IQ2_XXS,Q2_K,Q4_K_M")
@click.option("--imatrix", type=click.Path(dir_okay=False, exists=True), help="imatrix for every quantization")
@click.option("--out", "out_dir", type=click.Path(file_okay=False),
              help="quants and results.json [default: out/sweep/<model>]")
@click.option("--no-keep", is_flag=True, help="delete each quant once measured")
@_settings_options
def sweep_cmd(model, policies, ftypes, imatrix, out_dir, no_keep, text, ctx, chunks, backend, threads, checkout, fmt,
              plot):
    """Apply, build, quantize, verify and evaluate every (policy, ftype) of MODEL; one table and plot.

    Re-running skips every job already measured with the same model, policy, pin, ftype, imatrix, text
    and settings; a failed job is reported and the rest go on (exit 1 if any failed).
    """
    from pathlib import Path

    from qpatch.cli.progress import ClickProgress
    from qpatch.errors import JobsFailed
    from qpatch.quality import evaluation, sweep, tables

    if plot:
        tables.require_plotting()
    settings = evaluation.Settings(ctx=ctx, chunks=chunks, backend=backend, threads=threads)
    split = lambda s: [x for x in s.replace(" ", ",").split(",") if x]  # noqa: E731
    out_dir = out_dir or Path("out") / "sweep" / Path(model).stem
    r = sweep.sweep(model, split(policies), split(ftypes), text=text, imatrix=imatrix, checkout=_checkout_dir(checkout),
                    out_dir=out_dir, settings=settings, keep_quants=not no_keep, progress=ClickProgress())
    _emit(r.base, r.rows, fmt, plot, {"settings": settings.key()},
          title=f"{Path(model).name}: size against mean KLD (PPL base {r.base['ppl']:.3f})")
    click.echo(f"{len(r.rows)} jobs: {r.measured} measured, {r.cached} from {r.results_file}, {r.failed} failed "
               f"({r.seconds:.1f} s)", err=True)
    if r.failed:
        raise JobsFailed(f"{r.failed} of {len(r.rows)} jobs failed (their rows say at which step)")
