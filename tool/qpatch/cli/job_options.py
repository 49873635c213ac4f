"""llama-quantize's type options, declared by the pin families (families/<name>/options.py) and offered here
once for every command that plans or runs a job (plan, quantize, verify): the same names, help and parsing
everywhere. An option some families lack says which have it; `job.make_options` refuses it on the others.

The declarations are read when click first asks a job command for its parameters (to parse or to show
help), not when the command line starts: `qpatch --help` and the other commands never import them.
"""

from __future__ import annotations

import click

_PLACE = "qpatch_type_options"  # where in a command's options the type options go


class JobCommand(click.Command):
    """A command that runs a job: `type_options` marks the place of the families' type options, which are
    put there the first time click asks for the command's parameters."""

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        at = next((i for i, p in enumerate(self.params) if p.name == _PLACE), None)
        if at is not None:
            self.params[at:at + 1] = _type_params()
        return super().get_params(ctx)


def type_options(f):
    """Mark where a JobCommand's type options go; it takes them as **options and passes them on."""
    return click.option("--" + _PLACE.replace("_", "-"), _PLACE, hidden=True, expose_value=False)(f)


def _type_params() -> list[click.Parameter]:
    from qpatch.families import all_options, names

    every = names()
    out: list[click.Parameter] = []
    for opt, fams in all_options():
        where = "" if fams == every else f" [pin families: {', '.join(fams)}]"
        out.append(click.Option([opt.option, opt.name], help=opt.help + where, **opt.click_kwargs()))
    return out
