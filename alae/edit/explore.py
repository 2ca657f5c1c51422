"""`alae explore`: the latent explorer, a Gradio page served on 127.0.0.1 (the model's side of
each action is alae/edit/explorer.py).

Gradio because it is what ML users know and it serves everything the page needs from the
package itself: with analytics off, server-side rendering off and system fonts in the theme,
the page loads fully with no network at all (tests/test_explore_browser.py opens it that way).

No `from __future__ import annotations` here: Gradio hands a gallery's selection to a handler
whose parameter is annotated `gr.SelectData`, which it must be able to resolve, and gradio is
imported inside build_page (so that `alae --help` does not pay for importing it)."""
import functools
import os
from typing import Optional

import click
import numpy as np

from alae.commands import device_option, load_on_device, model_option, noise_option
from alae.errors import UserError, exits_cleanly

GALLERY = 12   # test images offered to pick from
SYSTEM_FONTS = ["system-ui", "-apple-system", "Segoe UI", "Roboto", "Helvetica", "Arial",
                "sans-serif"]
SYSTEM_MONO = ["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace"]


def _said(error: Exception) -> str:
    return f"**Error:** {error}"


def build_page(ex, gallery: list[np.ndarray], title: str):
    """The page's Blocks for Explorer `ex`, offering `gallery` ((C, H, W) images) to pick."""
    import gradio as gr
    import torch

    from alae.edit.explorer import SLIDER_STEP, shown
    from alae.edit.strips import LAYERS, MAX_STRENGTH

    n = len(ex.names)

    def edit_settings(settings) -> tuple:
        """(strengths, layers, A->B pair) of the edit controls' values, in `edit_in`'s order."""
        return settings[:n], settings[n + 3], (settings[n], settings[n + 1], settings[n + 2])

    def picked(x: Optional[np.ndarray], note: str, *settings):
        """A new image A: shown as taken, reconstructed, edited and mixed."""
        b, block = settings[-2], settings[-1]
        strengths, layers, pair = edit_settings(settings[:-2])
        recon = ex.reconstruct(x)
        edited = ex.edit(x, strengths, layers, pair) if ex.names else None
        mixed = ex.mix(x, b, block) if b is not None and ex.blocks else None
        return (x, shown(torch.as_tensor(x)[None]), recon, edited, mixed,
                f"Image A{': ' + note if note else ''}")

    def guarded(fn, outputs: int):
        """fn, with a UserError said on the status line (and in a pop-up) and the other outputs
        left as they were, so that bad input never stops the page (nor the server)."""
        @functools.wraps(fn)   # keeps fn's signature: Gradio reads it for gr.SelectData
        def run(*args):
            try:
                return fn(*args)
            except UserError as e:
                gr.Warning(str(e))
                return (*[gr.update()] * (outputs - 1), _said(e))
        return run

    def upload_a(path, *settings):
        if path is None:
            return (gr.update(),) * 6
        x, note = ex.take(path)
        return picked(x, note, *settings)

    def pick_a(evt: gr.SelectData, *settings):
        return picked(gallery[evt.index], f"test image {evt.index}", *settings)

    def edit(x, *settings):
        if x is None:
            raise UserError("pick or upload an image first")
        strengths, layers, pair = edit_settings(settings)
        return ex.edit(x, strengths, layers, pair), "Edited"

    def mix(x, b, block):
        if x is None or b is None:
            raise UserError("pick or upload both images A and B first")
        return ex.mix(x, b, block), f"Mixed: A with B's {block} styles"

    def take_b(x: np.ndarray, a, block, note: str):
        mixed = ex.mix(a, x, block) if a is not None else gr.update()
        return x, shown(torch.as_tensor(x)[None]), mixed, f"Image B{': ' + note if note else ''}"

    def upload_b(path, a, block):
        if path is None:
            return (gr.update(),) * 4
        x, note = ex.take(path)
        return take_b(x, a, block, note)

    def pick_b(evt: gr.SelectData, a, block):
        return take_b(gallery[evt.index], a, block, f"test image {evt.index}")

    def sample(seed, psi):
        return ex.sample(int(seed or 0), float(psi)), f"Sample: seed {int(seed or 0)}, psi {psi:g}"

    def picture(label: str, **kw):
        # PNG: Gradio's default WebP is lossy, and these are a model's exact pixels
        return gr.Image(label=label, interactive=False, format="png", **kw)

    thumbs = [(shown(torch.as_tensor(x)[None]), f"test {i}")
              for i, x in enumerate(gallery)]
    with gr.Blocks(title="ALAE explorer", analytics_enabled=False) as page:
        gr.Markdown(f"### ALAE latent explorer\n{title}")
        status = gr.Markdown("Pick a test image or upload one.", elem_id="status")
        x_a, x_b = gr.State(None), gr.State(None)
        with gr.Row():
            with gr.Column(scale=1, min_width=220):
                file_a = gr.File(label="Upload image A", type="filepath", elem_id="upload-a")
                pick_gallery = gr.Gallery(thumbs, label="or pick a test image", columns=3,
                                          allow_preview=False, height=220, visible=bool(thumbs),
                                          elem_id="gallery-a")
            shown_a = picture("A, as the model takes it", elem_id="image-a")
            recon = picture("reconstruction G(E(A))", elem_id="reconstruction")
            edited = picture("A moved along the directions", elem_id="edited")
        with gr.Row():
            with gr.Column(scale=2):
                layers = gr.Radio(list(LAYERS if ex.blocks else ["all"]), label="style slots "
                                  "moved", value=ex.directions.layers if ex.names else "all")
                sliders = [gr.Slider(-MAX_STRENGTH, MAX_STRENGTH, value=0.0, step=SLIDER_STEP,
                                     label=f"{name} (std)", elem_id=f"direction-{i}")
                           for i, name in enumerate(ex.names)]
                with gr.Row(visible=n >= 2):  # A->B: the unit difference of two directions
                    pair_from = gr.Dropdown(ex.names, value=ex.names[0] if n else None,
                                            label="from A", elem_id="pair-from")
                    pair_to = gr.Dropdown(ex.names, value=ex.names[min(1, n - 1)] if n else None,
                                          label="to B", elem_id="pair-to")
                    pair = gr.Slider(-MAX_STRENGTH, MAX_STRENGTH, value=0.0, step=SLIDER_STEP,
                                     label="A -> B (std)", elem_id="direction-pair")
                if not sliders:
                    gr.Markdown("No directions loaded (start with `--directions FILE`).")
            with gr.Column(scale=2, visible=bool(ex.blocks)):
                with gr.Row():
                    file_b = gr.File(label="Upload image B", type="filepath")
                    shown_b = picture("B")
                pick_b_gallery = gr.Gallery(thumbs, label="or pick B", columns=6,
                                            allow_preview=False, height=140,
                                            visible=bool(thumbs), elem_id="gallery-b")
                block = gr.Radio(ex.blocks or ["coarse"], value=(ex.blocks or ["coarse"])[0],
                                 label="B's styles copied into A")
                mixed = picture("A with B's styles", elem_id="mixed")
            with gr.Column(scale=1, min_width=220):
                seed = gr.Number(0, label="seed", precision=0, minimum=0)
                psi = gr.Slider(0.0, 1.0, value=0.7, step=0.05, label="psi (truncation)")
                go = gr.Button("Sample", elem_id="sample-button")
                sampled = picture("G(F(z))", elem_id="sample")

        edit_in = [*sliders, pair_from, pair_to, pair, layers]
        settings = [*edit_in, x_b, block]
        a_out = [x_a, shown_a, recon, edited, mixed, status]
        file_a.upload(guarded(upload_a, 6), [file_a, *settings], a_out)
        pick_gallery.select(guarded(pick_a, 6), settings, a_out)
        for control in edit_in:
            control.change(guarded(edit, 2), [x_a, *edit_in], [edited, status],
                           trigger_mode="always_last")
        b_out = [x_b, shown_b, mixed, status]
        file_b.upload(guarded(upload_b, 4), [file_b, x_a, block], b_out)
        pick_b_gallery.select(guarded(pick_b, 4), [x_a, block], b_out)
        block.change(guarded(mix, 2), [x_a, x_b, block], [mixed, status])
        go.click(guarded(sample, 2), [seed, psi], [sampled, status])
    return page


def theme():
    """Gradio's default look in system fonts: nothing is fetched from a font service."""
    import gradio as gr

    return gr.themes.Default(font=SYSTEM_FONTS, font_mono=SYSTEM_MONO)


@click.command()
@model_option
@click.option("--directions", "directions_path", type=click.Path(dir_okay=False),
              help="file of `alae directions`: one slider per direction")
@click.option("--shards", type=click.Path(file_okay=False),
              help=f"shards whose first {GALLERY} test images are offered to pick")
@click.option("--port", default=7860, show_default=True, type=click.IntRange(1, 65535))
@click.option("--host", default="127.0.0.1", show_default=True,
              help="address to serve on (0.0.0.0: every network the machine is on)")
@noise_option
@device_option
@exits_cleanly
def explore(model_path: str, directions_path: Optional[str], shards: Optional[str], port: int,
            host: str, noise: str, device: str) -> None:
    """Serve the latent explorer: pick or upload an image, see its reconstruction, move it
    along directions, mix styles with a second image, sample by seed and psi."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # read when gradio is imported
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise UserError("alae explore needs gradio: pip install -e '.[explore]' (make setup "
                        "installs it)") from None
    from alae.edit.directions import load_directions
    from alae.edit.explorer import Explorer
    from alae.figures import first_test_images
    from alae.io import file_sha256

    model, _ = load_on_device(model_path, device)
    table = None
    if directions_path is not None:
        table = load_directions(directions_path, model.latent)
        if table.model_sha256 != file_sha256(model_path):
            click.echo(f"warning: {directions_path} was made for another model file", err=True)
    gallery = ([x.cpu().numpy() for x in first_test_images(model, shards, GALLERY)]
               if shards is not None else [])
    ex = Explorer(model, table, noise)
    title = f"`{model_path}`" + (f", directions `{directions_path}`" if table else "")
    page = build_page(ex, gallery, title)
    click.echo(f"starting the explorer at http://{host}:{port} (Ctrl+C stops it)")
    try:
        page.queue().launch(server_name=host, server_port=port, ssr_mode=False, quiet=True,
                            show_error=True, theme=theme(), footer_links=[])
    except OSError as e:
        raise UserError(f"--host {host} --port {port}: cannot serve there ({e})") from None


COMMANDS = (explore,)
