"""llama-quantize's type options, declared by the pin families (families/<name>/options.py) and offered here
once for every command that plans or runs a job (plan, quantize, verify): the same names, help and parsing
everywhere. An option some families lack says which have it; `job.make_options` refuses it on the others."""

from __future__ import annotations

import click

from qpatch.families import all_options, names


def type_options(f):
    """Add every family's type options to a click command; it takes them as **options and passes them on."""
    every = names()
    for opt, fams in reversed(all_options()):
        where = "" if fams == every else f" [pin families: {', '.join(fams)}]"
        f = click.option(opt.option, opt.name, help=opt.help + where, **opt.click_kwargs())(f)
    return f
