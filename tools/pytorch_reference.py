#!/usr/bin/env python3
"""Recomputes the PyTorch reference from an exported model (no training).

Usage: python3 tools/pytorch_reference.py --export DIR --corpus brown.txt --out OUT_DIR
DIR holds manifest.json, weights.bin and tokenizer.json as written by train_default_model.py.
Writes OUT_DIR/logits.f32, OUT_DIR/reference.json and OUT_DIR/reference_log.txt.
"""
import argparse
import os
import sys

import torch
from tokenizers import Tokenizer

from brown_llama import EOT, load_exported, read_documents, split_documents, write_reference


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--export", required=True)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    log_file = open(os.path.join(args.out, "reference_log.txt"), "w", encoding="utf-8")

    def log(msg):
        print(msg, flush=True)
        log_file.write(msg + "\n")

    model, man = load_exported(args.export, args.device)
    tok = Tokenizer.from_file(os.path.join(args.export, "tokenizer.json"))
    eot = tok.token_to_id(EOT)
    if eot != man["bos_id"]:
        sys.exit(f"{EOT} is id {eot} in the tokenizer but bos_id is {man['bos_id']} in the manifest")
    _, val_docs = split_documents(read_documents(args.corpus))
    log(f"{man['name']}: {man['n_params']} parameters, validation loss {man['val_loss']:.4f}")
    write_reference(model, tok, eot, val_docs, args.out, log)
    log_file.close()


if __name__ == "__main__":
    main()
