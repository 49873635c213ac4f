"""Regenerate docs/policies/<name>.md: docstring, rules, before/after plans on a DeepSeek-V3-shaped
model (61 blocks, 3 dense, 256 experts + 1 shared, real row lengths, one row per tensor) on the
default pin, and where the policy's types differ between the pins (computed, not written by
hand). Run: make docs. Output is deterministic."""

import collections
import sys
import tempfile
from pathlib import Path

from qpatch import job
from qpatch.families.pins import DEFAULT_PIN, available_pins, family_of, load_pin
from qpatch.gguf.model_facts import kind_of
from qpatch.gguf.synth import Spec, deepseek_v3, write_imatrix, write_model, write_sparse_split
from qpatch.policy import listing as policies_view
from qpatch.policy import loader
from qpatch.predict import report

DSV3 = Spec("DeepSeek-V3-shaped", "deepseek2", 61, n_embd=7168, n_ff=18432, n_head=128, n_head_kv=128,
            n_expert=256, n_expert_used=8, n_ff_exp=2048, leading_dense=3, shared_experts=1, attention="mla",
            q_lora=1536, kv_lora=512, n_vocab=129280)
# DeepSeek-V2-Lite's layout (attn_kv_b, 64 experts + 2 shared, 1 dense block), thin
DSV2 = Spec("DeepSeek-V2-Lite-shaped", "deepseek2", 27, n_embd=2048, n_ff=10944, n_head=16, n_head_kv=16,
            n_expert=64, n_expert_used=6, n_ff_exp=1408, leading_dense=1, shared_experts=2, attention="kvb",
            kv_lora=512, n_vocab=102400)
FTYPES = ("IQ1_M", "IQ2_XXS", "Q4_K_M")
IK_FTYPES = ("IQ2_KS", "IQ3_K", "IQ4_KS")  # for a policy written in ik_llama.cpp's types


def home_pin(name: str) -> str:
    """The default pin, or, for a policy that names types the default pin lacks, the first pin that has them."""
    from qpatch.errors import PolicyError
    from qpatch.predict.engine import check_types

    pol = loader.load(name)
    for pin in [DEFAULT_PIN] + [p for p in available_pins() if p != DEFAULT_PIN]:
        try:
            check_types(pol, family_of(pin).catalogue, pin)
            return pin
        except PolicyError:
            continue
    raise SystemExit(f"policy {name} loads on no pin")


def pin_differences(name: str, models, home: str) -> list[str]:
    """Rows where the policy's type on one shipped pin differs from its home pin's, over every ftype both have."""
    from qpatch.errors import PolicyError

    pins = [p for p in available_pins() if any(s.kind == "sdist" for s in load_pin(p).sources)]
    other = []
    for p in pins:
        if p == home or family_of(p).project != family_of(home).project:
            continue  # another code base's stock differs everywhere: its own policies say how
        try:
            job.make_plan(models[0][1], "Q8_0", policy=name, pin=p)
            other.append(p)
        except PolicyError:
            pass  # it names types that pin does not have
    if not other:
        return [f"No other pin of {family_of(home).project} loads it (it names types only pin {home}'s family has)."]
    rows = collections.Counter()
    for pin in other:
        common = [f.name for f in family_of(pin).catalogue.ftypes
                  if f.quantizes and f.name in family_of(home).catalogue.by_name]
        for label, model, imatrix in models:
            for ft in common:
                for im in (imatrix, None):
                    a = job.make_plan(model, ft, policy=name, imatrix=im, pin=pin)
                    b = job.make_plan(model, ft, policy=name, imatrix=im, pin=home)
                    if a.errors or b.errors:
                        if bool(a.errors) != bool(b.errors):
                            rows[(pin, label, ft, "yes" if im else "no", "(the job)",
                                  "aborts" if a.errors else "runs", "aborts" if b.errors else "runs", "")] += 1
                        continue
                    rb = {t.name: t.rule for t in b.tensors}
                    for ta, tb in zip(a.tensors, b.tensors):
                        if ta.type != tb.type:
                            rows[(pin, label, ft, "yes" if im else "no", kind_of(ta.name), ta.type.name,
                                  tb.type.name, rb[tb.name].split("; ")[-1][:60])] += 1
    if not rows:
        return ["The policy gives every tensor the same type on every shipped pin (both models, every ftype)."]
    out = ["| pin | model | ftype | imatrix | tensors | there | here | decided here by | n |",
           "|---|---|---|---|---|---|---|---|---|"]
    for k, n in sorted(rows.items()):
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in k) + f" | {n} |")
    return out


def main(out_dir: Path):
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as d:
        model = write_model(DSV3, Path(d) / "DeepSeek-V3-shaped.gguf")
        imatrix = write_imatrix(DSV3, Path(d) / "DeepSeek-V3-shaped.imatrix.gguf")
        v2 = write_model(DSV2, Path(d) / "DeepSeek-V2-Lite-shaped.gguf")
        v2_im = write_imatrix(DSV2, Path(d) / "DeepSeek-V2-Lite-shaped.imatrix.gguf")
        models = [("DeepSeek-V3", model, imatrix), ("DeepSeek-V2-Lite", v2, v2_im)]
        # for a policy outside the default pin's family: DeepSeek-V3 at real size (a sparse file), for real sizes
        real = write_sparse_split(deepseek_v3(full=True), Path(d) / "DeepSeek-V3-real", 1)[0]
        for name in loader.available():
            if name == "stock":
                continue
            pol = loader.load(name)
            home = home_pin(name)
            ftypes = FTYPES if home == DEFAULT_PIN else IK_FTYPES
            parts = [f"# {name}", "", "<!-- generated by scripts/policy_docs.py (make docs); do not edit -->", "",
                     pol.description, "", "## Rules (`qpatch show " + name + "`)", "", "```",
                     policies_view.show(name), "```", ""]
            # the real-size model has no imatrix here (a real-size one is gigabytes): the IQ-K ftypes shown need none
            shown, label, im, im_opt, with_im = ((model, "DeepSeek-V3-shaped.gguf", imatrix, " --imatrix ...", "with")
                                                 if home == DEFAULT_PIN else
                                                 (real, "DeepSeek-V3-real.gguf", None, "", "without"))
            for ft in ftypes:
                base = job.make_plan(shown, ft, policy="stock", imatrix=im, pin=home)
                new = job.make_plan(shown, ft, policy=name, imatrix=im, pin=home)
                pin_opt = "" if home == DEFAULT_PIN else f" --pin {home}"
                parts += [f"## {ft} {with_im} imatrix on pin {home}: what changes against stock",
                          "", f"`qpatch plan {label} --ftype {ft}{im_opt}{pin_opt} --policy {name} "
                          f"--compare stock`", "", "```", report.format_compare(base, new), "```", ""]
            parts += ["## Where this policy's types differ between pins", "",
                      f"Every tensor of a DeepSeek-V3-shaped and a DeepSeek-V2-Lite-shaped model, every ftype both "
                      f"pins of the same code base have, imatrix on and off: the other pin's type (*there*) "
                      f"against {home}'s (*here*). "
                      f"The policy's docstring above says why.", "", *pin_differences(name, models, home), ""]
            (out_dir / f"{name}.md").write_text("\n".join(parts))
            print(f"{out_dir / (name + '.md')}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("docs/policies"))
