"""Stage 1, what llama.cpp's files hold: the ggml type and ftype catalogue (catalogue.py), GGUF headers
read without the data region (header.py), the model facts type choice reads from them (model_facts.py),
imatrix files (imatrix.py), synthetic models written as sparse files (synth.py), and the tiny real
model with weights (tiny_model.py). Imports no other stage.

Which pin families exist is read here, once (`family_names`): every folder of qpatch/families that holds
a catalogue.json, the file this stage reads of each. families.names() is this list.
"""

from pathlib import Path

FAMILIES_DIR = Path(__file__).parent.parent / "families"


def family_names() -> tuple[str, ...]:
    """Every pin family: the folders of qpatch/families that hold a catalogue.json, sorted."""
    return tuple(sorted(p.parent.name for p in FAMILIES_DIR.glob("*/catalogue.json")))
