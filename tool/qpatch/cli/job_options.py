"""llama-quantize's type options, declared once for every command that plans or runs a job (plan, quantize,
verify): the same names, help and parsing everywhere. Which of them a pin's binary has is its family's
business (`Family.options`); `job.make_options` refuses the others."""

from __future__ import annotations

import click

_OPTIONS = (
    click.option("--output-tensor-type", help="as llama-quantize's --output-tensor-type"),
    click.option("--token-embedding-type", help="as llama-quantize's --token-embedding-type"),
    click.option("--tensor-type", "tensor_types", multiple=True, metavar="PAT=TYPE",
                 help="as llama-quantize (repeatable)"),
    click.option("--tensor-type-file", type=click.Path(dir_okay=False), help="as llama-quantize's --tensor-type-file"),
    click.option("--pure", is_flag=True, help="as llama-quantize's --pure"),
    click.option("--leave-output-tensor", is_flag=True, help="as llama-quantize's --leave-output-tensor"),
    click.option("--prune-layers", metavar="L0,L1,...", help="as llama-quantize's --prune-layers"),
    click.option("--custom-q", "custom_q", multiple=True, metavar="PAT=TYPE,...", help="ik_llama.cpp's --custom-q"),
    click.option("--kind-type", "kind_types", multiple=True, metavar="OPTION=TYPE",
                 help="ik_llama.cpp's per-kind options, e.g. attn-v-type=q8_0 for --attn-v-type q8_0 (repeatable)"),
    click.option("--ignore-imatrix-rules", is_flag=True, help="ik_llama.cpp's --ignore-imatrix-rules"),
)
NAMES = ("output_tensor_type", "token_embedding_type", "tensor_types", "tensor_type_file", "pure",
         "leave_output_tensor", "prune_layers", "custom_q", "kind_types", "ignore_imatrix_rules")


def type_options(f):
    """Add every type option to a click command; the command takes them as **options and passes them on."""
    for opt in reversed(_OPTIONS):
        f = opt(f)
    return f
