"""Labelled image grids that a person can read: small images upscaled, prompts as row labels."""

from __future__ import annotations


def _font(size: int):
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def labelled_grid(rows: list[list], row_labels: list[str], column_labels: list[str] | None = None, cell: int = 128):
    """One image: ``rows[i][j]`` upscaled to ``cell`` pixels, ``row_labels`` on the left and
    optional ``column_labels`` on top. Fewer column labels than columns label equal groups of
    columns (one model's seeds, say), with a line between groups. Cells are laid out by
    diffusers' ``make_image_grid``.
    """
    from diffusers.utils import make_image_grid
    from PIL import Image, ImageDraw

    n_columns = max(len(r) for r in rows)
    blank = Image.new("RGB", (cell, cell), (255, 255, 255))
    cells = []
    for row in rows:
        scaled = [img.convert("RGB").resize((cell, cell), Image.NEAREST) for img in row]
        cells += scaled + [blank] * (n_columns - len(scaled))
    body = make_image_grid(cells, rows=len(rows), cols=n_columns)

    font = _font(max(12, cell // 9))
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_width = 12 + max(probe.textlength(label, font=font) for label in row_labels)
    header = cell // 4 if column_labels else 0
    canvas = Image.new("RGB", (int(label_width) + body.width, header + body.height), (255, 255, 255))
    canvas.paste(body, (int(label_width), header))
    draw = ImageDraw.Draw(canvas)
    for i, label in enumerate(row_labels):
        draw.text((6, header + i * cell + cell // 2), label, fill=(0, 0, 0), font=font, anchor="lm")
    if column_labels:
        per_column = body.width / len(column_labels)
        for j, label in enumerate(column_labels):
            draw.text(
                (label_width + (j + 0.5) * per_column, header // 2), label, fill=(0, 0, 0), font=font, anchor="mm"
            )
            if j:
                x = int(label_width + j * per_column)
                draw.line([(x, 0), (x, canvas.height)], fill=(0, 0, 0), width=3)
    return canvas


def plot(size: tuple[float, float] = (5.5, 4)):
    """A matplotlib figure and axes drawn off screen (no display on a server)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=size, dpi=120)


def save_plot(figure, path):
    """Write ``figure`` as a PNG at ``path`` (atomically) and free it; returns the path."""
    import matplotlib.pyplot as plt

    from erasectl.files import write_atomically

    figure.tight_layout()
    write_atomically(path, lambda tmp: figure.savefig(tmp, format="png"))
    plt.close(figure)
    return path
