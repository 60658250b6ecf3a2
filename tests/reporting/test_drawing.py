"""Gallery panels: titles fit their panel."""

from __future__ import annotations

import numpy as np


def test_image_axis_wraps_long_titles_to_the_panel():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from stages.reporting.drawing import TITLE_WIDTH, image_axis

    fig, ax = plt.subplots()
    title = "random: image 100149\nrare: diamond_red_dotted_dark, trapezoid_purple_checked_slim, star_white_striped_slim"
    image_axis(ax, np.zeros((4, 4, 3), dtype=np.uint8), title)
    lines = ax.get_title().split("\n")
    plt.close(fig)
    assert lines[0] == "random: image 100149"
    assert len(lines) >= 3 and all(len(line) <= TITLE_WIDTH for line in lines)
    assert " ".join(lines[1:]).replace("  ", " ") == title.split("\n")[1]  # nothing lost, names unbroken
