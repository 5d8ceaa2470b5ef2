"""Deterministic train/val/test split from a prompt's content hash, so the same
prompt always lands in the same split, in every campaign and every snapshot."""

TRAIN_PERCENT = 80
VAL_PERCENT = 10


def split_for_hash(digest: str) -> str:
    bucket = int(digest[:8], 16) % 100
    if bucket < TRAIN_PERCENT:
        return "train"
    if bucket < TRAIN_PERCENT + VAL_PERCENT:
        return "val"
    return "test"
