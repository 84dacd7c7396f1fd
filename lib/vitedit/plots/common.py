"""What every figure shares: the headless backend outside a kernel, saving (and showing a saved
figure as the PNG it saved), readable class names and cell text, method colours and markers."""

from __future__ import annotations

from pathlib import Path

import matplotlib

if matplotlib.get_backend().lower() != "module://matplotlib_inline.backend_inline":
    matplotlib.use("Agg")  # headless outside a notebook kernel
import matplotlib.pyplot as plt  # noqa: E402, F401  (after the backend choice)
import numpy as np  # noqa: E402
from matplotlib.colors import LinearSegmentedColormap  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

# difference maps: one colour means "better" everywhere (green), "worse" red, no change white
BETTER_WORSE = LinearSegmentedColormap.from_list("worse_better", ["#b2182b", "#f7f7f7", "#1a9850"])


MARKERS = "osD^vPX*<>ph"


SAVE_DPI = 120


def _save(fig, path: Path | None):
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=SAVE_DPI, bbox_inches="tight")
        if Path(path).suffix.lower() == ".png":
            fig._vitedit_png = Path(path).read_bytes()  # shown as saved: see _show_saved_png
            fig.stale = False  # any change to the figure from here on sets it again
    return fig


def _show_saved_png(fig):
    """A notebook kernel shows a figure this module saved as the very PNG it saved (at the size the
    kernel would have drawn it), instead of drawing it a second time: drawing is most of a plot's
    cost (8-method confusion matrices: seconds per draw). None: the kernel's own drawing."""
    data = getattr(fig, "_vitedit_png", None)
    if data is None or fig.stale:  # not saved here, or changed since it was saved
        return None
    width = int.from_bytes(data[16:20], "big")  # PNG IHDR: the width in pixels
    # the width only: a page that narrows the image to fit keeps its aspect ratio
    return data, {"width": round(width * fig.dpi / SAVE_DPI)}


def _register_saved_png_display() -> None:
    """In a kernel with the inline backend: figures saved by :func:`_save` display as saved."""
    try:
        from IPython import get_ipython  # lazy: optional, there in a notebook kernel only
    except ImportError:
        return
    ip = get_ipython()
    if ip is None or not hasattr(ip, "display_formatter"):
        return
    if "inline" in matplotlib.get_backend():
        # matplotlib loads its backend at the first figure; loading it now makes the inline
        # backend register its figure formatter first, so that ours wraps it (not the reverse)
        import matplotlib_inline.backend_inline  # noqa: F401  # lazy: a kernel's backend only
    fmt = ip.display_formatter.formatters["image/png"]
    try:
        draw = fmt.lookup_by_type(Figure)  # the inline backend's own drawing
    except KeyError:
        return  # figures are not shown as PNG in this kernel: nothing to replace
    if getattr(draw, "_vitedit", False):
        return

    def png(fig):
        return _show_saved_png(fig) or draw(fig)

    png._vitedit = True
    fmt.for_type(Figure, png)


def _show_image(ax, img):
    ax.imshow(img if img.ndim == 3 and img.shape[-1] == 3 else np.squeeze(img), cmap="gray")


def class_labels(label_names, width: int | None = None, numbered: str = "class {}") -> list[str]:
    """Readable, distinct class names: ``numbered`` where a name is only its index (RetinaMNIST's
    grades '0'..'4'), the part before a parenthesis, cut to ``width`` characters with an ellipsis."""
    out = []
    for i, name in enumerate(label_names):
        s = str(name).strip()
        if s == str(i):
            s = numbered.format(i)
        elif "(" in s and not s.startswith("("):
            s = s.split("(")[0].strip()
        if width and len(s) > width:
            s = s[: width - 1].rstrip() + "…"
        out.append(s)
    return [f"{s} ({i})" if out.count(s) > 1 else s for i, s in enumerate(out)]


def text_color(im, value) -> str:
    """White on a dark cell of ``im`` (an ``AxesImage``), black on a light one (luminance < 0.5)."""
    r, g, b, _ = im.cmap(im.norm(value))
    return "white" if 0.299 * r + 0.587 * g + 0.114 * b < 0.5 else "black"


def _annotate(ax, im, values, labels=None, fontsize=7):
    """Each cell's number in a colour readable on its cell."""
    values = np.asarray(values)
    for (i, j), v in np.ndenumerate(values):
        text = labels[i][j] if labels is not None else f"{v:g}"
        ax.text(j, i, text, ha="center", va="center", fontsize=fontsize, color=text_color(im, v))


# red and green mean worse and better (change maps); kinds and methods use other colours
KIND_COLORS = {"block": "tab:purple", "mlp": "tab:blue", "attn": "tab:orange"}


METHOD_COLORS = (
    "tab:blue",
    "tab:orange",
    "tab:purple",
    "tab:brown",
    "tab:pink",
    "tab:gray",
    "tab:olive",
    "tab:cyan",
    "navy",
    "gold",
    "black",
    "teal",
    "maroon",
    "darkviolet",
    "sienna",
    "slategray",
)


def method_colors(methods) -> dict:
    """A colour per method, in order; more methods than colours reuse them (never a KeyError: the
    benchmark's variants, e.g. ``alphaedit[region_max]``, add rows to the registered methods)."""
    return {m: METHOD_COLORS[i % len(METHOD_COLORS)] for i, m in enumerate(methods)}
