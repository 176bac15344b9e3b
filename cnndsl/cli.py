"""The `cnndsl` command line: thin click commands over the library."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from . import zoo
from .checker import parse_value
from .errors import Diagnostic, use_color
from .files import same_file
from .frontend import check_source
from .network import MAX_SEED, MIN_SEED, Network
from .parser import read_source_bytes
from .shapes import Shape
from .summary import COLUMNS, DEFAULT_COLUMNS, DEFAULT_DEPTH


def _parse_sets(values: tuple[str, ...]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"expected k=v; got {item!r}", param_hint="--set")
        try:
            params[key.strip()] = parse_value(value)
        except ValueError as err:
            raise click.BadParameter(f"{key.strip()}: {err}", param_hint="--set") from None
    return params


def _parse_input(value: str | None) -> Shape | None:
    if value is None:
        return None
    try:
        return Shape.parse(value)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--input") from None


def read_source(path: str) -> tuple[bytes | None, str, str | None]:
    """(data, display name, error) for a path or `-` (standard input)."""
    # At most one byte over the size limit is read: `/dev/zero` or a 2 GB file is refused, not read whole.
    if path == "-":
        return read_source_bytes(sys.stdin.buffer), "<stdin>", None
    path = str(zoo.find(path) or path)
    try:
        return read_source_bytes(path), path, None
    except OSError as err:
        hint = f"\nhint: {zoo.missing_hint(path)}" if isinstance(err, FileNotFoundError) else ""
        return None, path, f"{path}: error: cannot read the file: {err.strerror or err}{hint}"


def load_for_command(path: str, input_text: str | None, sets: tuple[str, ...], strict: bool = False) -> Network:
    """Check a file for a command; print diagnostics to stderr and exit 1 on errors."""
    data, name, error = read_source(path)
    if data is None:
        click.echo(error, err=True)
        sys.exit(1)
    network, diagnostics = check_source(data, name, _parse_input(input_text), _parse_sets(sets), strict)
    _print_diagnostics(diagnostics)
    if network is None:
        sys.exit(1)
    return network


def _print_diagnostics(diagnostics: list[Diagnostic]) -> None:
    color = use_color(sys.stderr)
    for diagnostic in diagnostics:
        click.echo(diagnostic.format(color), err=True)


SEED = click.IntRange(MIN_SEED, MAX_SEED)
"""Seeds as Network.to_torch and Network.to_numpy accept them."""

input_option = click.option("--input", "input_text", metavar="CxHxW", help="Override the file's input shape.")
set_option = click.option("--set", "sets", multiple=True, metavar="K=V", help="Set a network parameter (repeatable).")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="cnndsl")
def main() -> None:
    """cnndsl: write a CNN in a .cnn file; check, compile, render, run and train it."""


@main.command()
@click.argument("files", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per file (docs/LANGUAGE.md's schema).")
@click.option("--strict", is_flag=True, help='Treat "doesn\'t fit" warnings as errors.')
@set_option
@input_option
@click.option("-q", "--quiet", is_flag=True, help="Print diagnostics only.")
@click.option(
    "--depth",
    type=click.IntRange(min=0),
    default=DEFAULT_DEPTH,
    show_default=True,
    metavar="N",
    help="Open blocks and groups N levels deep; deeper ones are one row with their totals.",
)
@click.option("--expand", is_flag=True, help="Show every layer (no folding).")
@click.option(
    "--columns",
    "columns_text",
    default=",".join(DEFAULT_COLUMNS),
    show_default=True,
    metavar="C,C,...",
    help="Columns among input, output, params, macs, rf (receptive field), kernel.",
)
def check(
    files: tuple[str, ...],
    as_json: bool,
    strict: bool,
    sets: tuple[str, ...],
    input_text: str | None,
    quiet: bool,
    depth: int,
    expand: bool,
    columns_text: str,
) -> None:
    """Check FILES (`-` for standard input) and print each network's summary."""
    input_shape = _parse_input(input_text)
    params = _parse_sets(sets)
    columns = _parse_columns(columns_text)
    failed = False
    for index, path in enumerate(files):
        data, name, error = read_source(path)
        if data is None:
            click.echo(error, err=True)
            failed = True
            continue
        network, diagnostics = check_source(data, name, input_shape, params, strict)
        failed = failed or network is None
        if as_json:
            report: dict[str, Any] = network.to_json() if network else {"file": name, "diagnostics": []}
            report["diagnostics"] = [d.to_json() for d in diagnostics]
            click.echo(json.dumps(report))
            continue
        _print_diagnostics(diagnostics)
        if network is not None and not quiet:
            if index:
                click.echo()
            click.echo(network.summary(None if expand else depth, columns))
    sys.exit(1 if failed else 0)


def _parse_columns(text: str) -> tuple[str, ...]:
    columns = tuple(c.strip().lower() for c in text.split(",") if c.strip())
    unknown = [c for c in columns if c not in COLUMNS]
    if unknown or not columns:
        raise click.BadParameter(
            f"unknown column {', '.join(unknown) or '(none given)'}; choose among {', '.join(COLUMNS)}", param_hint="--columns"
        )
    return columns


@main.command()
@click.argument("file")
@click.option(
    "-o", "--output", metavar="OUT", help="Output file: .svg, .png, .pdf or .dot [default: FILE's name as .svg, beside it]."
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["svg", "png", "pdf", "dot"], case_sensitive=False),
    help="Output format (default: from the output's extension).",
)
@click.option(
    "--rankdir",
    type=click.Choice(["TB", "LR"], case_sensitive=False),
    default="TB",
    show_default=True,
    help="Top to bottom or left to right.",
)
@click.option("--expand", is_flag=True, help="Draw every layer instead of one box per block call and repetition.")
@click.option("--depth", type=click.IntRange(min=0), metavar="N", help="Open block calls N levels deep (default 0).")
@click.option("--dpi", type=click.FloatRange(min=1), metavar="N", help="PNG resolution [default: 96].")
@click.option(
    "--scale", type=click.FloatRange(min=0, min_open=True), metavar="S", help="PNG scale: S times 96 dpi (2 for slides)."
)
@set_option
@input_option
def render(
    file: str,
    output: str | None,
    fmt: str | None,
    rankdir: str,
    expand: bool,
    depth: int | None,
    dpi: float | None,
    scale: float | None,
    sets: tuple[str, ...],
    input_text: str | None,
) -> None:
    """Draw FILE (`-` for standard input) with Graphviz as SVG, PNG, PDF or DOT."""
    try:
        from .graph import DEFAULT_DPI, RenderError, check_dpi, format_for
        from .graph import render as render_network
    except ImportError:
        click.echo("error: drawing needs the graphviz Python package: pip install 'cnndsl[graph]'", err=True)
        sys.exit(1)
    if expand and depth is not None:
        raise click.UsageError("--expand draws every layer; give either --expand or --depth, not both")
    if dpi is not None and scale is not None:
        raise click.UsageError("--scale is a multiple of 96 dpi; give either --dpi or --scale, not both")
    if output is None:
        if file == "-":
            raise click.UsageError("standard input has no name to draw beside: give -o OUT")
        output = str(Path(file).with_suffix("." + (fmt.lower() if fmt else "svg")))
    try:
        fmt = format_for(output, fmt)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="-o/--output") from None
    if scale is not None:
        dpi = scale * DEFAULT_DPI
    try:
        check_dpi(dpi, fmt)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--scale" if scale is not None else "--dpi") from None
    # Checked before reading: a drawing written over its own source would destroy it.
    if file != "-" and Path(file).exists() and same_file(file, output):
        raise click.BadParameter(f"refusing to overwrite the input file {file}", param_hint="-o/--output")
    network = load_for_command(file, input_text, sets)
    try:
        render_network(network, output, fmt, expand=expand, depth=depth, rankdir=rankdir, dpi=dpi)
    except RenderError as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(1)
    click.echo(f"wrote {output}")


@main.command(name="compile")
@click.argument("file")
@click.option(
    "--target",
    type=click.Choice(["torch", "onnx"]),
    default="torch",
    show_default=True,
    help="torch: one Python file that imports only torch; onnx: an ONNX model (needs -o).",
)
@click.option("-o", "--output", metavar="PATH", help="Write here instead of standard output.")
@click.option(
    "--weights-from",
    "--weights",
    "weights",
    metavar="W",
    help="Trained weights (.safetensors, .pt, .npz or a training checkpoint), in cnndsl's layout or another module's "
    "(torchvision, timm, ...: matched by structure); their input normalisation becomes the module's first step, "
    "and --weights-out gets them.",
)
@click.option("--allow-partial", is_flag=True, help="Load the layers of --weights-from that fit; report the rest.")
@click.option(
    "--weights-out",
    metavar="PATH",
    help="Also save the weights as a state_dict for the generated class (initial ones unless --weights-from; "
    ".safetensors (also without a known suffix), .pt or .npz).",
)
@click.option(
    "--weights-layout",
    metavar="FILE_OR_MODULE",
    help="Write --weights-out under the keys of this template: a state_dict file, or module:callable "
    "(torchvision.models:resnet50, or with keyword arguments: 'torchvision.models:resnet50(num_classes=10)').",
)
@click.option("--opset", type=click.IntRange(min=7), metavar="N", help="ONNX opset version [default: torch's].")
@click.option("--seed", type=SEED, help="Seed the initial weights.")
@set_option
@input_option
def compile_command(
    file: str,
    target: str,
    output: str | None,
    weights: str | None,
    allow_partial: bool,
    weights_out: str | None,
    weights_layout: str | None,
    opset: int | None,
    seed: int | None,
    sets: tuple[str, ...],
    input_text: str | None,
) -> None:
    """Compile FILE (`-` for standard input) to PyTorch source or ONNX."""
    from .compiler import compile_network
    from .errors import CnnDslError

    if target == "onnx" and output is None:
        raise click.UsageError("--target onnx writes a binary file; give -o PATH")
    if weights_layout is not None and weights_out is None:
        raise click.UsageError("--weights-layout says how --weights-out names the weights; give --weights-out too")
    if opset is not None and target != "onnx":
        raise click.UsageError("--opset is for --target onnx")
    network = load_for_command(file, input_text, sets)
    try:
        result = compile_network(
            network,
            target,  # type: ignore[arg-type]
            output,
            weights_out,
            seed,
            protected=[file],
            weights=weights,
            allow_partial=allow_partial,
            weights_layout=weights_layout,
            opset=opset,
        )
    except CnnDslError as err:
        _print_diagnostics(err.diagnostics)
        sys.exit(1)
    text = result.source
    for line in result.report.lines() if result.report is not None else []:
        click.echo(line, err=True)
    if text is not None:
        click.echo(text, nl=False)
    # With the source on standard output, the notes go to standard error so as not to mix into it.
    for path in (output, weights_out):
        if path is not None:
            click.echo(f"wrote {path}", err=text is not None)


@main.command(name="train")
@click.argument("file")
@click.option(
    "--data",
    required=True,
    metavar="SOURCE",
    help="digits, synthetic[:N], synthetic-seg[:N] (per-pixel masks), PATH.npz (arrays x as NxCxHxW or NxHxWxC, and y: "
    "labels, or NxHxW masks for a network that outputs CxHxW) or an image folder ROOT/CLASS/*.png|jpg.",
)
@click.option("--backend", type=click.Choice(["torch", "numpy"]), default="torch", show_default=True)
@click.option(
    "--epochs",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Total epochs (a resumed run counts the earlier ones).",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=64,
    show_default=True,
    help="Global batch, split over torchrun's processes.",
)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), help="Learning rate [default: 0.05 for sgd, 0.001 for adamw].")
@click.option("--optimizer", type=click.Choice(["sgd", "adamw"]), default="sgd", show_default=True)
@click.option(
    "--schedule",
    type=click.Choice(["cosine", "constant"]),
    default="cosine",
    show_default=True,
    help="Learning rate: cosine decay over --epochs, or constant.",
)
@click.option("--momentum", type=click.FloatRange(0, 1, max_open=True), default=0.9, show_default=True, help="SGD momentum.")
@click.option("--weight-decay", type=click.FloatRange(min=0), help="[default: 5e-4 for sgd, 0.01 for adamw]")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--amp", type=click.Choice(["off", "bf16", "fp16"]), default="off", show_default=True, help="Mixed precision.")
@click.option("--channels-last", is_flag=True, help="NHWC memory format (faster convolutions on GPUs).")
@click.option("--compile", "compile_model", is_flag=True, help="torch.compile the model.")
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    help="CPU threads (torch, or the NumPy backend's BLAS) [default: 1 for small networks].",
)
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--checkpoint-dir", type=click.Path(file_okay=False), help="Write a checkpoint here after every epoch.")
@click.option("--resume", is_flag=True, help="Continue from the checkpoint in --checkpoint-dir.")
@click.option("--metrics-json", type=click.Path(dir_okay=False), help="Write the final metrics here as JSON.")
@click.option("--no-progress", is_flag=True, help="No progress bars (the per-epoch lines stay).")
@click.option(
    "--save",
    type=click.Path(dir_okay=False),
    metavar="W",
    help="Save the trained weights with the input normalisation here: .safetensors (also without a suffix), .pt or .npz.",
)
@click.option(
    "--init-from",
    metavar="W",
    help="Start from these weights: cnndsl's layout or another module's (a torchvision or timm checkpoint), matched by "
    "structure; a head that --set changed is re-initialised.",
)
@click.option(
    "--freeze",
    metavar="PATH,...",
    multiple=True,
    help="Do not train the layers under these path prefixes (repeatable or comma-separated; torch backend).",
)
@click.option("--allow-partial", is_flag=True, help="--init-from: load the layers that fit and report the rest.")
@click.option(
    "--weights-layout",
    metavar="FILE_OR_MODULE",
    help="--save under the keys of this template (a state_dict file or module:callable such as torchvision.models:resnet50).",
)
@set_option
@input_option
def train_command(
    file: str,
    data: str,
    backend: str,
    epochs: int,
    batch_size: int,
    lr: float | None,
    optimizer: str,
    schedule: str,
    momentum: float,
    weight_decay: float | None,
    device: str,
    amp: str,
    channels_last: bool,
    compile_model: bool,
    threads: int | None,
    seed: int,
    checkpoint_dir: str | None,
    resume: bool,
    metrics_json: str | None,
    no_progress: bool,
    save: str | None,
    init_from: str | None,
    freeze: tuple[str, ...],
    allow_partial: bool,
    weights_layout: str | None,
    sets: tuple[str, ...],
    input_text: str | None,
) -> None:
    """Train FILE on a data source (torch or NumPy); under torchrun, with DistributedDataParallel."""
    from .errors import CnnDslError
    from .train import TrainConfig, train
    from .train.distributed import world_from_env

    main_process = world_from_env().is_main  # under torchrun only rank 0 prints errors
    network = load_for_command(file, input_text, sets)
    try:
        config = TrainConfig(
            data=data,
            backend=backend,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            optimizer=optimizer,
            schedule=schedule,
            momentum=momentum,
            weight_decay=weight_decay,
            device=device,
            amp=amp,
            channels_last=channels_last,
            compile=compile_model,
            threads=threads,
            seed=seed,
            checkpoint_dir=Path(checkpoint_dir) if checkpoint_dir else None,
            resume=resume,
            metrics_json=Path(metrics_json) if metrics_json else None,
            progress=not no_progress,
            save=Path(save) if save else None,
            init_from=init_from,
            freeze=tuple(p.strip() for item in freeze for p in item.split(",") if p.strip()),
            allow_partial=allow_partial,
            weights_layout=weights_layout,
        )
        train(network, config)
    except CnnDslError as err:
        if main_process:
            _print_diagnostics(err.diagnostics)
        sys.exit(1)
    except KeyboardInterrupt:
        if main_process:
            where = (
                f"; the last complete checkpoint is in {checkpoint_dir} (--resume continues from it)" if checkpoint_dir else ""
            )
            click.echo(f"interrupted{where}", err=True)
        sys.exit(130)


@main.command(name="run")
@click.argument("file")
@click.option("--backend", type=click.Choice(["numpy", "torch"]), default="numpy", show_default=True)
@click.option(
    "--input",
    "input_spec",
    default="random",
    show_default=True,
    metavar="x.npy|random",
    help="The input batch: an .npy array (NxCxHxW, or one CxHxW sample) or standard-normal noise.",
)
@click.option(
    "--weights",
    metavar="W",
    help="Weights: .safetensors, .pt/.pth or .npz (a state_dict, `train --save` output or a training checkpoint, "
    "or another module's state_dict such as a torchvision checkpoint: matched by structure); "
    "default: PyTorch's initialisation from --seed.",
)
@click.option("--allow-partial", is_flag=True, help="--weights: load the layers that fit and report the rest.")
@click.option("--batch", type=click.IntRange(min=1), help="Batch size for --input random [default: 1].")
@click.option("-o", "--output", metavar="out.npy", help="Save the output array here.")
@click.option("--input-shape", "input_text", metavar="CxHxW", help="Override the file's input shape.")
@set_option
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed for the initial weights and random input.")
def run_command(
    file: str,
    backend: str,
    input_spec: str,
    weights: str | None,
    allow_partial: bool,
    batch: int | None,
    output: str | None,
    input_text: str | None,
    sets: tuple[str, ...],
    seed: int,
) -> None:
    """Run FILE on one input batch; print the output shape, the time taken and, for classifiers, the top-5 classes."""
    from .errors import CnnDslError
    from .run import read_input, refuse_run_overwrite, run_network, save_output

    network = load_for_command(file, input_text, sets)
    try:
        refuse_run_overwrite(network, output, [file, input_spec if input_spec != "random" else None, weights])
        x = read_input(network, input_spec, batch, seed, backend)  # type: ignore[arg-type]
        result = run_network(network, backend, x, weights, seed, allow_partial)  # type: ignore[arg-type]
        if output:
            save_output(network, output, result.output)
    except CnnDslError as err:
        _print_diagnostics(err.diagnostics)
        sys.exit(1)
    shape = "x".join(str(d) for d in result.output.shape)
    calls = f"mean of {result.calls} calls" if result.calls > 1 else "1 call"
    for line in result.weights_report.lines() if result.weights_report is not None else []:
        click.echo(line)
    click.echo(f"{network.name}: output {shape} ({backend}, {result.seconds * 1000:.1f} ms per batch, {calls} after a warm-up)")
    if result.normalised_by is not None:
        click.echo(f"  input normalised with the training mean/std from {result.normalised_by}")
    top = result.top_classes()
    if top is not None:
        for row, pairs in enumerate(top[:8]):
            click.echo(f"  sample {row}: " + ", ".join(f"{c} ({p:.1%})" for c, p in pairs))
        if len(top) > 8:
            click.echo(f"  ... {len(top) - 8} more samples")
    if output:
        click.echo(f"wrote {output}")


@main.command(name="layers")
@click.option("--json", "as_json", is_flag=True, help="Print the registry as a JSON list.")
@click.option("--markdown", is_flag=True, help="Print the layer table of docs/LANGUAGE.md.")
def layers_command(as_json: bool, markdown: bool) -> None:
    """List every layer kind: name, aliases, signature and what it does."""
    from .layers.catalog import layers_json, layers_markdown, layers_text

    if as_json:
        click.echo(json.dumps(layers_json(), indent=1))
    else:
        click.echo(layers_markdown() if markdown else layers_text())


@main.command(name="zoo")
@click.option("--json", "as_json", is_flag=True, help="Print the zoo as a JSON list.")
def zoo_command(as_json: bool) -> None:
    """List the networks that ship with cnndsl; `cnndsl check NAME` checks one by name."""
    rows: list[dict[str, Any]] = []
    for entry in zoo.entries():
        network, _ = check_source(entry.path.read_bytes(), str(entry.path))
        params = network.params if network is not None else None
        shape = str(network.input_shape) if network is not None else "?"
        rows.append(
            {"name": entry.name, "params": params, "input": shape, "description": entry.description, "path": str(entry.path)}
        )
    if as_json:
        click.echo(json.dumps(rows, indent=1))
        return
    width = max(len(row["name"]) for row in rows)
    for row in rows:
        count = f"{row['params']:,}" if row["params"] is not None else "error"
        line = f"{row['name']:<{width}}  {count:>12}  {row['input']:<11}  {row['description']}"
        click.echo(line if len(line) <= 160 else line[:157] + "...")
