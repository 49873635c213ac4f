"""`qpatch build`: compile llama.cpp tools from a checkout (see qpatch.build)."""

from __future__ import annotations

import click


@click.command("build")
@click.option("--cpu", "backend", flag_value="cpu", default=True, help="build for the CPU (default) into DIR/build-cpu")
@click.option("--cuda", "backend", flag_value="cuda", help="build with CUDA into DIR/build-cuda (needs nvcc)")
@click.option("--dir", "checkout_dir", default="llama.cpp", show_default=True, type=click.Path(file_okay=False),
              help="the llama.cpp checkout")
@click.option("--target", "-t", "targets", multiple=True, metavar="NAME",
              help="llama-quantize (default), llama-imatrix, llama-perplexity, llama-tokenize, llama-cli; "
                   "repeatable or comma-separated")
@click.option("--jobs", "-j", type=click.IntRange(min=1), help="parallel compile jobs [default: all cores]")
@click.option("--cuda-archs", envvar="CUDA_ARCHS", metavar="LIST",
              help="CUDA architectures, e.g. '80;90' [env CUDA_ARCHS; default: the GPU present, else 75;80;86;89;90]")
@click.option("--define", "-D", "defines", multiple=True, metavar="KEY=VALUE",
              help="a CMake definition of your own, e.g. -D GGML_CUDA_FA=OFF (repeatable; kept by later builds)")
@click.option("--quiet", "-q", is_flag=True, help="no progress line; errors still show the build's last lines")
def build_cmd(backend, checkout_dir, targets, jobs, cuda_archs, defines, quiet):
    """Configure (once) and build llama.cpp's tools; prints the path of each binary."""
    from qpatch.build import cmake
    from qpatch.cli.progress import ClickProgress

    wanted = [t for spec in targets for t in spec.replace(",", " ").split()] or list(cmake.DEFAULT_TARGETS)
    bindir = cmake.build(checkout_dir, backend, wanted, jobs=jobs,
                         cuda_archs=cuda_archs if backend == "cuda" else None,
                         progress=None if quiet else ClickProgress(),
                         defines=cmake.parse_defines(defines) if defines else None)
    for t in dict.fromkeys(wanted):
        click.echo(bindir / t)
