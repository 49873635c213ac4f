"""synth: write a thin synthetic GGUF model (and imatrix) of a known shape, to try policies on."""

from __future__ import annotations

import click

PRESETS = ("deepseek-v3", "deepseek-v3-mini", "qwen3-moe", "llama-gqa", "deepseek-tiny")


def _spec(preset: str):
    from qpatch.gguf.synth import Spec, deepseek_v3

    if preset == "deepseek-v3":  # real hyper-parameters and row lengths, 2 rows per matrix
        return deepseek_v3(name="deepseek-v3-thin")
    if preset == "deepseek-v3-mini":  # DeepSeek-V3's rows, 12 blocks, 32 experts: quantizes in seconds
        return deepseek_v3(name="deepseek-v3-mini", n_layer=12, leading_dense=1, n_expert=32)
    if preset == "qwen3-moe":
        return Spec("qwen3-moe-thin", "qwen3moe", 48, n_embd=2048, n_ff=6144, n_head=32, n_head_kv=4, head_dim=128,
                    n_expert=128, n_expert_used=8, n_ff_exp=768)
    return Spec("llama-gqa-thin", "llama", 32, n_embd=4096, n_ff=14336, n_head=32, n_head_kv=8)


@click.command("synth")
@click.argument("preset", type=click.Choice(PRESETS))
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("--imatrix", type=click.Path(dir_okay=False),
              help="also write a synthetic imatrix here: GGUF, or the legacy binary format for a name ending in .dat "
                   "(the only one ik_llama.cpp reads)")
@click.option("--force", is_flag=True, help="overwrite files that exist")
@click.option("--mkdir", is_flag=True, help="create missing directories")
@click.option("--dir", "checkout", type=click.Path(file_okay=False),
              help="deepseek-tiny: the checkout whose DeepSeek vocabulary it takes (default: llama.cpp/)")
def synth_cmd(preset, out, imatrix, force, mkdir, checkout):
    """Write a thin GGUF model shaped like PRESET (real hyper-parameters and row lengths, 2 rows per
    matrix, 2 stored experts): real input for plan, quantize and verify, in megabytes.

    deepseek-tiny is another kind: a whole, random 3-block DeepSeek MoE (16 routed experts, MLA) with the
    pin's real DeepSeek vocabulary, which llama-perplexity runs: for trying eval, measure and fit.

    It overwrites nothing and creates no directory unless told (--force, --mkdir)."""
    import contextlib
    from pathlib import Path

    from qpatch import files
    from qpatch.errors import UsageError
    from qpatch.gguf.synth import write_imatrix, write_model

    for path in (p for p in (out, imatrix) if p):
        if Path(path).exists() and not force:
            raise UsageError(f"{path} exists", hint="pass --force to overwrite it")
        if not Path(path).parent.is_dir():
            if not mkdir:
                raise UsageError(f"directory {Path(path).parent} does not exist", hint="pass --mkdir to create it")
            try:
                Path(path).parent.mkdir(parents=True)
            except OSError as e:
                raise files.cannot_write(path, e) from None
    if preset == "deepseek-tiny":
        from qpatch.gguf import tiny_model
        from qpatch.shipped import default_checkout

        vocab = Path(checkout or default_checkout()) / tiny_model.VOCAB
        if not vocab.is_file():
            raise UsageError(f"{vocab} does not exist: deepseek-tiny takes the vocabulary of a llama.cpp checkout",
                             hint="qpatch fetch, or pass --dir CHECKOUT")
        spec = tiny_model.spec(tiny_model.vocabulary(vocab)[0], **tiny_model.tiny())
    else:
        spec = _spec(preset)
    # Both files are written beside their targets and renamed at the end: all or nothing.
    with contextlib.ExitStack() as stack:
        tmp_out = stack.enter_context(files.replacing(out))
        tmp_im = stack.enter_context(files.replacing(imatrix)) if imatrix else None
        writing = out
        try:
            if preset == "deepseek-tiny":
                tiny_model.write(tmp_out, vocab, **tiny_model.tiny())
            else:
                write_model(spec, tmp_out)
            size = tmp_out.stat().st_size
            if tmp_im:
                writing = imatrix
                write_imatrix(spec, tmp_im, legacy=str(imatrix).endswith(".dat"))
        except OSError as e:
            raise files.cannot_write(writing, e) from None
    click.echo(f"wrote {out}: {spec.arch}, {spec.n_layer} blocks, {spec.n_expert} experts, "
               f"{len(spec.tensors())} tensors, {size / 2**20:.1f} MiB")
    if imatrix:
        click.echo(f"wrote {imatrix}")
