"""The sizes of the image-level splits: one rule, read by the split stage and by the config check."""

from __future__ import annotations


def holdout_size(n_images: int, holdout_fraction: float) -> int:
    """Images of the holdout when ``n_images`` are split: round(fraction * n), at least 1 and at most
    n - 1 (the train part keeps one); 0 when there is nothing to split (n < 2)."""
    if n_images < 2:
        return 0
    return min(max(1, int(round(holdout_fraction * n_images))), n_images - 1)


def halving_problem(n_images: int, holdout_fraction: float) -> str | None:
    """Why ``n_images`` split with ``holdout_fraction`` cannot give a train part and a holdout cut in two
    halves (the student's tuning: Delta on half a, the choice on half b); None when it can."""
    n_holdout = holdout_size(n_images, holdout_fraction)
    if n_holdout >= 2:
        return None
    advice = f"use at least {2 / n_images:.3g} (or more train images)" if n_images >= 3 else "there are too few images"
    return (f"{holdout_fraction:g} of {n_images} train image(s) is a holdout of {n_holdout} image(s); the split cuts the "
            f"holdout into two halves (Delta from half a, the student's tuning on half b), so it needs at least 2: "
            f"{advice}")
