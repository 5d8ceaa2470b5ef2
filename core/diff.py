"""Word-level diff of two texts as escaped HTML, for pages that put two
answers side by side (the labeling app's disagreements and pair pages)."""

from __future__ import annotations

import difflib
import html

from django.utils.safestring import SafeString, mark_safe


def word_diff(left: str, right: str) -> tuple[SafeString, SafeString]:
    """Word-level diff as escaped HTML with <del>/<ins> marks: what only
    ``left`` has is deleted, what only ``right`` has is inserted."""
    a, b = left.split(" "), right.split(" ")
    out_a, out_b = [], []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(
        a=a, b=b, autojunk=False
    ).get_opcodes():
        chunk_a = html.escape(" ".join(a[i1:i2]))
        chunk_b = html.escape(" ".join(b[j1:j2]))
        if op == "equal":
            out_a.append(chunk_a)
            out_b.append(chunk_b)
        else:
            if chunk_a:
                out_a.append(f"<del>{chunk_a}</del>")
            if chunk_b:
                out_b.append(f"<ins>{chunk_b}</ins>")
    return mark_safe(" ".join(out_a)), mark_safe(" ".join(out_b))  # noqa: S308 - every chunk escaped above
