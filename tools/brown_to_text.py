#!/usr/bin/env python3
"""Turn the tagged Brown corpus files (word/tag tokens) into plain English text.

Usage: brown_to_text.py CORPUS_DIR OUT.txt

Output: one paragraph per line; documents (the 500 corpus files, in name order) are separated by
one empty line. Tags are dropped and the tokenised punctuation is glued back the way edited text
prints it: ``quotes'' become "quotes", no space before , . ; : ? ! ) and after ( and so on.
"""
import os
import re
import sys

ATTACH_LEFT = {",", ".", ";", ":", "?", "!", ")", "]", "}", "''", "'"}
ATTACH_RIGHT = {"(", "[", "{", "``"}
ATTACH_BOTH = {"--"}


def word_of(token):
    # A token is word/tag; the word itself may contain '/' (1/2/cd), so split at the last one.
    cut = token.rfind("/")
    return token if cut <= 0 else token[:cut]


def detokenize(words):
    out = []
    glue_next = True  # no space before the first word
    for w in words:
        text = '"' if w in ("``", "''") else w
        if w == "." and out and out[-1].endswith("."):
            continue  # "Jr." ending a sentence: the corpus adds a second period
        if out and not glue_next and w not in ATTACH_LEFT and w not in ATTACH_BOTH:
            out.append(" ")
        out.append(text)
        glue_next = w in ATTACH_RIGHT or w in ATTACH_BOTH
    return "".join(out)


def is_headline(line):
    tokens = line.split()
    return bool(tokens) and all(t.endswith("-hl") for t in tokens)


def paragraphs(raw):
    # Paragraphs are separated by blank lines; a headline (every tag ends in -hl) may sit on the
    # line right above its paragraph's first sentence and is a paragraph of its own.
    for block in re.split(r"\n\s*\n", raw):
        current = []
        for line in block.split("\n"):
            if is_headline(line):
                if current:
                    yield detokenize(current)
                yield detokenize([word_of(t) for t in line.split()])
                current = []
            else:
                current.extend(word_of(t) for t in line.split())
        if current:
            yield detokenize(current)


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: brown_to_text.py CORPUS_DIR OUT.txt")
    src, dst = sys.argv[1], sys.argv[2]
    names = sorted(n for n in os.listdir(src) if re.fullmatch(r"c[a-r]\d\d", n))
    if len(names) != 500:
        sys.exit(f"{src}: expected the 500 Brown corpus files ca01..cr09, found {len(names)}")
    docs = []
    for n in names:
        with open(os.path.join(src, n), encoding="utf-8") as f:
            docs.append("\n".join(paragraphs(f.read())))
    with open(dst, "w", encoding="utf-8") as f:
        f.write("\n\n".join(docs) + "\n")
    print(f"{dst}: {len(docs)} documents, {sum(len(d.split()) for d in docs)} words")


if __name__ == "__main__":
    main()
