"""The text the tiny MoE learns from, tokenized with the pin's own tools (no torch needed).

The Python standard library's source of the Python running this (every .py, its tests too, but
not site-packages; sorted, up to a byte budget); the `asyncio` and `email` packages are held out:
never trained on, they are the text `qpatch eval`/`sweep` measure on. Tokenized by the pin's
`llama-tokenize` with the pin's DeepSeek-coder vocabulary (models/ggml-vocab-deepseek-coder.gguf).

    python train/corpus.py --tree llama.cpp --tokenize llama.cpp/build-cpu/bin/llama-tokenize --out out/corpus

Writes train.bin and heldout.bin (uint16 token ids), heldout.txt, calib.txt (llama-imatrix's
calibration text: the first MB of the training text) and corpus.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tool"))
from qpatch.gguf import tiny_model  # noqa: E402

HELD_OUT = ("asyncio", "email")


PIECE = 1_000_000  # bytes of text per llama-tokenize call (one 24 MB call aborts in the tokenizer)


def corpus(limit: int) -> tuple[list[str], list[str]]:
    """(train, held-out) file texts: every stdlib .py in sorted order, train up to `limit` bytes."""
    lib = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in lib.rglob("*.py") if "site-packages" not in p.parts)
    train, held = [], []
    n = 0
    for p in files:
        text = p.read_text(encoding="utf-8", errors="replace")
        if p.relative_to(lib).parts[0] in HELD_OUT:
            held.append(text)
        elif n < limit:
            train.append(text)
            n += len(text)
    return train, held


def tokenize(binary: Path, vocab: Path, text: str, tmp: Path, *, bos: bool) -> np.ndarray:
    tmp.write_text(text)
    out = subprocess.run([str(binary), "-m", str(vocab), "-f", str(tmp), "--ids", "--log-disable",
                          *([] if bos else ["--no-bos"])], capture_output=True, text=True, check=True).stdout
    body = out[out.index("["): out.rindex("]") + 1]
    return np.array(json.loads(body), dtype=np.int64)


def tokenize_files(binary: Path, vocab: Path, texts: list[str], tmp: Path) -> tuple[np.ndarray, int]:
    """Files joined by blank lines, tokenized a piece at a time; a piece the tokenizer aborts on is retried
    file by file and such files are left out. Returns (ids, files left out)."""
    pieces, cur = [], []
    for t in texts:
        cur.append(t)
        if sum(map(len, cur)) >= PIECE:
            pieces.append(cur)
            cur = []
    pieces += [cur] if cur else []
    ids, skipped = [], 0
    for piece in pieces:
        try:
            ids.append(tokenize(binary, vocab, "\n\n".join(piece) + "\n\n", tmp, bos=False))
        except subprocess.CalledProcessError:
            for t in piece:
                try:
                    ids.append(tokenize(binary, vocab, t + "\n\n", tmp, bos=False))
                except subprocess.CalledProcessError:
                    skipped += 1
    return np.concatenate(ids), skipped


def prepare(tree: Path, tokenize_bin: Path, out: Path, corpus_bytes: int) -> dict:
    """The corpus, tokenized by the pin's llama-tokenize: train.bin / heldout.bin (uint16 ids), heldout.txt."""
    vocab = tree / tiny_model.VOCAB
    t0 = time.time()
    out.mkdir(parents=True, exist_ok=True)
    train, held = corpus(corpus_bytes)
    train_ids, skipped = tokenize_files(tokenize_bin, vocab, train, out / "piece.tmp")
    calib, n = [], 0  # llama-imatrix's calibration text: the first MB of the training text
    for t in train:
        calib.append(t)
        n += len(t)
        if n >= PIECE:
            break
    (out / "calib.txt").write_text("\n\n".join(calib))
    held_text = "\n\n".join(held)
    (out / "heldout.txt").write_text(held_text)
    held_ids = tokenize(tokenize_bin, vocab, held_text, out / "piece.tmp", bos=True)  # as llama-perplexity does
    (out / "piece.tmp").unlink()
    assert train_ids.max() < 2**16 and held_ids.max() < 2**16
    train_ids.astype(np.uint16).tofile(out / "train.bin")
    held_ids.astype(np.uint16).tofile(out / "heldout.bin")
    meta = {"python": sys.version.split()[0], "stdlib": sysconfig.get_paths()["stdlib"], "held_out": list(HELD_OUT),
            "train_files": len(train), "train_files_skipped": skipped, "train_tokens": int(len(train_ids)),
            "heldout_files": len(held), "heldout_tokens": int(len(held_ids)), "heldout_bytes": len(held_text.encode()),
            "vocab": tiny_model.VOCAB, "seconds": round(time.time() - t0, 1)}
    (out / "corpus.json").write_text(json.dumps(meta, indent=1))
    return meta


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tree", type=Path, required=True, help="the pin's llama.cpp tree (for its vocabulary)")
    ap.add_argument("--tokenize", type=Path, required=True, help="the pin's llama-tokenize binary")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--corpus-bytes", type=int, default=24_000_000)
    a = ap.parse_args(argv)
    print(json.dumps(prepare(a.tree, a.tokenize, a.out, a.corpus_bytes), indent=1))


if __name__ == "__main__":
    main()
