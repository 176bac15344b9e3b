"""Diagnostics: position, message, caret and hint for every kind of mistake; golden output."""

from __future__ import annotations

import pytest

import cnndsl
from cnndsl import CnnDslError

# (name, source, [(severity, line, column, message fragment)])
CASES: list[tuple[str, str | bytes, list[tuple[str, int, int, str]]]] = [
    ("syntax", "input 3x8x8\nConv(3 3)", [("error", 2, 8, "unexpected `3`")]),
    ("missing_bracket", "input 3x8x8\n[Conv(3, 1), ReLU", [("error", 2, 1, "`[` is never closed")]),
    ("stray_bracket", "input 3x8x8\nConv(3, 1)]", [("error", 2, 11, "`]` has no matching `[`")]),
    ("repeat_needs_count", "input 3x8x8\nConv(3, 1) x", [("error", 2, 12, "`x` needs a count")]),
    ("pipe_outside_merge", "input 3x8x8\n[Conv(3, 1) | ReLU]", [("error", 2, 13, "`|` outside a merge")]),
    ("unknown_layer", "input 3x8x8\nCnov(3, 1)", [("error", 2, 1, "unknown layer or block `Cnov`")]),
    (
        "unknown_block",
        "input 3x8x8\nblock Basic(c) = [Conv(c, 1)]\nBsaic(3)",
        [("error", 3, 1, "unknown layer or block `Bsaic`")],
    ),
    ("unknown_argument", "input 3x8x8\nConv(3, 1, strid=2)", [("error", 2, 12, "Conv has no argument `strid`")]),
    ("missing_argument", "input 3x8x8\nConv(kernel=3)", [("error", 2, 1, "Conv needs `out`")]),
    ("duplicate_argument", "input 3x8x8\nConv(3, 1, out=4)", [("error", 2, 12, "`out` is given twice")]),
    ("too_many_arguments", "input 3x8x8\nTanh(1)", [("error", 2, 6, "Tanh takes no arguments")]),
    ("ill_typed_argument", "input 3x8x8\nConv(3, 1, bias=2)", [("error", 2, 17, "`bias` must be true or false; got 2")]),
    ("non_positive_size", "input 3x8x8\nConv(0, 1)", [("error", 2, 6, "`out` must be a positive integer; got 0")]),
    ("negative_stride", "input 3x8x8\nConv(3, 1, stride=-1)", [("error", 2, 19, "`stride` must be a positive integer")]),
    ("fractional_channels", "input 3x8x8\nConv(3 / 2, 1)", [("error", 2, 6, "`out` must be a positive integer; got 1.5")]),
    ("unknown_name", "input 3x8x8\nConv(widht, 1)", [("error", 2, 6, "unknown name `widht`")]),
    ("kernel_too_large", "input 3x8x8\nConv(3, 11)", [("error", 2, 9, "larger than the padded input (8 + 2*0 = 8)")]),
    ("groups", "input 3x8x8\nConv(4, 1, groups=2)", [("error", 2, 12, "groups=2 must divide the input channels")]),
    (
        "branches_disagree",
        "input 3x8x8\nAdd[Conv(4, 1) | Conv(5, 1)]",
        [("error", 2, 1, "Add: branch shapes disagree: 4x8x8, 5x8x8")],
    ),
    ("concat_disagree", "input 3x8x8\nConcat[Conv(4, 1) | Conv(4, 3)]", [("error", 2, 1, "Concat: branch shapes disagree")]),
    ("fc_on_image", "input 3x8x8\nFC(10)", [("error", 2, 1, "FC needs a flat input; got an image 3x8x8")]),
    (
        "conv_on_flat",
        "input 3x8x8\nflatten, Conv(3, 1)",
        [("error", 2, 10, "Conv needs channels with spatial axes (CxL, CxHxW or CxDxHxW)")],
    ),
    (
        "recursion",
        "input 3x8x8\nblock A(c) = [Conv(c, 1), B(c)]\nblock B(c) = [A(c)]\nA(3)",
        [("error", 3, 15, "block `A` calls itself (A -> B -> A)")],
    ),
    (
        "block_named_like_layer",
        "input 3x8x8\nblock conv(c) = [ReLU]\nReLU",
        [("error", 2, 7, "has the name of a built-in layer")],
    ),
    ("repeat_negative", "input 3x8x8\nReLU x (0 - 1)", [("error", 2, 9, "cannot be negative; got -1")]),
    ("repeat_fraction", "input 3x8x8\nReLU x (5 / 2)", [("error", 2, 9, "must be a whole number; got 2.5")]),
    ("division_by_zero", "input 3x8x8\nConv(4 // 0, 1)", [("error", 2, 6, "division by zero in `4 // 0`")]),
    ("empty", "", [("error", 1, 1, "the file is empty")]),
    ("only_comments", "# nothing\n\n", [("error", 1, 1, "the file is empty")]),
    ("missing_input", "Conv(3, 1)", [("error", 1, 1, "no `input` line")]),
    ("nul_byte", "input 3x8x8\nRe\x00LU", [("error", 2, 3, "NUL byte")]),
    ("invalid_utf8", b"input 3x8x8\nReLU \xff", [("error", 2, 6, "invalid UTF-8 byte 0xff")]),
    ("header_after_body", "input 3x8x8\nReLU\ndefaults Conv(3)", [("error", 3, 1, "`defaults` must come before")]),
    ("duplicate_label", "input 3x8x8\na: ReLU, a: ReLU", [("error", 2, 10, "label `a` is defined twice in the network")]),
    # references (`@name`) and the `output` line
    (
        "duplicate_label_in_two_groups",
        "input 3x8x8\n[a: ReLU], [a: ReLU]",
        [("error", 2, 13, "label `a` is defined twice in the network")],
    ),
    (
        "unknown_label",
        "input 3x8x8\nskip: Conv(4, 3, pad=1)\nConcat[@skp | Identity]",
        [("error", 3, 8, "unknown label `skp` in `@skp`")],
    ),
    (
        "reference_to_a_later_label",
        "input 3x8x8\nConcat[@b | Identity]\nb: ReLU",
        [("error", 2, 8, "`@b` refers to `b`, which is computed later (line 3, column 1)")],
    ),
    (
        "reference_inside_its_element",
        "input 3x8x8\na: Add[@a | Identity]",
        [("error", 2, 8, "`@a` refers to the element it is part of: `a` is not computed yet")],
    ),
    (
        "reference_across_a_block",
        "input 3x8x8\nblock B = Add[@a | Identity]\na: ReLU, B",
        [("error", 2, 15, "`@a`: the label `a` belongs to the network, outside block `B`")],
    ),
    (
        "labelled_reference",
        "input 3x8x8\na: ReLU\nb: @a",
        [("error", 3, 4, "a reference cannot be labelled")],
    ),
    (
        "every_iteration_of_no_repetition",
        "input 3x8x8\na: ReLU\nConcat[@a* | Identity]",
        [("error", 3, 8, "`@a*` needs a repetition, and `a` labels no `x N`")],
    ),
    (
        "every_iteration_outside_a_merge",
        "input 3x8x8\nm: ReLU x 2\n@m*",
        [("error", 3, 1, "`@m*` stands only as a whole branch of a merge")],
    ),
    ("at_without_label", "input 3x8x8\nReLU, @ a", [("error", 2, 7, "`@` without a label")]),
    (
        "unknown_output",
        "input 3x8x8\noutput a, c\na: ReLU\nb: ReLU",
        [("error", 2, 11, "unknown label `c` in `output c`")],
    ),
    ("output_twice", "input 3x8x8\noutput a, a\na: ReLU", [("error", 2, 11, "`a` is an output twice")]),
    # an argument that names a tensor (`Upsample(like=@name)`) is read as a reference is
    (
        "like_unknown_label",
        "input 3x8x8\nskip: Conv(4, 3, stride=2, pad=1)\nUpsample(like=@skp)",
        [("error", 3, 15, "unknown label `skp` in `like=@skp`")],
    ),
    (
        "like_not_computed_yet",
        "input 3x8x8\nu: [Conv(4, 3, stride=2, pad=1), Upsample(like=@u)]",
        [("error", 2, 48, "`like=@u` refers to the element it is part of: `u` is not computed yet")],
    ),
    (
        "like_a_flat_tensor",
        "input 3x8x8\nf: flatten\nReshape(3, 8, 8), Upsample(like=@f)",
        [
            (
                "error",
                3,
                28,
                "Upsample: like=@f is a flat vector of 192; it takes the spatial size of a map (CxL, CxHxW or CxDxHxW)",
            )
        ],
    ),
    (
        "like_across_a_block",
        "input 3x8x8\nblock Up = Upsample(like=@s)\ns: ReLU, MaxPool(2), Up",
        [("error", 2, 26, "`like=@s`: the label `s` belongs to the network, outside block `Up`")],
    ),
    ("like_as_a_default", "input 3x8x8\ndefaults Upsample(like=@input)\nReLU", [("error", 2, 19, "`like` cannot be a default")]),
    ("reference_as_a_value", "input 3x8x8\nConv(@input, 3)", [("error", 2, 6, "`@input` is a tensor, not a value")]),
    (
        "output_condition_not_a_boolean",
        "network N(heads=2)\ninput 3x8x8\noutput a, b if heads\na: ReLU\nb: ReLU",
        [("error", 3, 16, "the condition of output `b` must be true or false; got 2")],
    ),
    (
        "output_condition_misspelt",
        "network N(aux=false)\ninput 3x8x8\noutput a, b if axu\na: ReLU\nb: ReLU",
        [("error", 3, 16, "the condition of output `b` must be true or false; got axu")],
    ),
    (
        "output_line_with_every_condition_false",
        "network N(aux=false)\ninput 3x8x8\noutput a if aux, b if not aux and aux\na: ReLU\nb: ReLU",
        [("error", 3, 1, "the `output` line lists no output: every name's condition is false")],
    ),
    (
        "output_condition_hides_no_misspelt_name",
        "network N(aux=false)\ninput 3x8x8\noutput a, c if aux\na: ReLU\nb: ReLU",
        [("error", 3, 11, "unknown label `c` in `output c`")],
    ),
    (
        "branch_condition_not_a_boolean",
        "network N(depth=2)\ninput 3x8x8\nAdd[Conv(3, 1) | Identity if depth]",
        [("error", 3, 30, "the condition of a merge branch must be true or false; got 2")],
    ),
    (
        "branch_condition_misspelt",
        "network N(shortcut=true)\ninput 3x8x8\nAdd[Conv(3, 1) | Identity if shortcat]",
        [("error", 3, 30, "the condition of a merge branch must be true or false; got shortcat")],
    ),
    (
        "merge_with_every_branch_left_out",
        "network N(a=false)\ninput 3x8x8\nConcat[Conv(3, 1) if a | Conv(4, 1) if not a and a]",
        [("error", 3, 1, "every branch of Concat[...] is left out: each one's condition is false")],
    ),
    (
        "reference_to_a_branch_left_out",
        "network N(a=false)\ninput 3x8x8\nAdd[Identity | k: Conv(3, 1) if a]\nConcat[Identity | @k]",
        [("error", 4, 19, "`@k` refers to `k`, which is not built: its merge branch's condition is false")],
    ),
    ("output_before_input", "output a\ninput 3x8x8\na: ReLU", [("error", 2, 7, "`input` is out of order")]),
    (
        "merge_of_a_reference_and_a_smaller_map",
        "input 3x8x8\ns: ReLU\nMaxPool(2)\nConcat[@s | Identity]",
        [("error", 4, 1, "Concat: branch shapes disagree outside the channel axis: 3x8x8, 3x4x4")],
    ),
    (
        "doesnt_fit",
        "input 3x7x7\nConv(8, 3, stride=3)",
        [("warning", 2, 1, "(7 - 3)/3 + 1 = 2.33 leaves the last 1 input rows and columns unread")],
    ),
    ("merge_without_branches", "input 3x8x8\nAdd", [("error", 2, 1, "`Add` combines branches")]),
    ("unknown_merge", "input 3x8x8\nSum[ReLU | ReLU]", [("error", 2, 1, "unknown merge `Sum`")]),
    (
        "network_param_without_default",
        "network N(c)\ninput 3x8x8\nConv(c, 1)",
        [("error", 1, 11, "network parameter `c` has no default")],
    ),
    ("block_missing_argument", "input 3x8x8\nblock B(c) = [Conv(c, 1)]\nB()", [("error", 3, 1, "block `B` needs `c`")]),
    (
        "pad_same_even_kernel",
        "input 3x8x8\nConv(3, 2, stride=2, pad=same)",
        [("error", 2, 22, "pad=same with an even kernel (after dilation) needs stride 1")],
    ),
    ("pool_pad_same_even_kernel", "input 3x8x8\nMaxPool(2, pad=same)", [("error", 2, 12, "pad=same needs an odd kernel")]),
    ("chunk_index", "input 4x8x8\nChunk(2, 2)", [("error", 2, 10, "index must be below chunks")]),
    (
        "add_channels_differ",
        "input 32x16x16\nAdd[Conv(64, 3, pad=1), BN, ReLU | Identity]",
        [("error", 2, 1, "Add: branch shapes disagree: 64x16x16, 32x16x16")],
    ),
    (
        "add_downsampled",
        "input 32x16x16\nAdd[Conv(64, 3, stride=2, pad=1), BN | ]",
        [("error", 2, 1, "Add: branch shapes disagree: 64x8x8, 32x16x16")],
    ),
    ("input_with_spaces", "input 3 x 32 x 32\nReLU", [("error", 1, 9, "unexpected `x` in the input shape")]),
    ("quoted_word", 'input 3x8x8\nConv(4, 3, pad="same")', [("error", 2, 16, "unexpected quote")]),
    (
        "three_sizes_on_an_image",
        "input 3x8x8\nConv(4, 3x3x3)",
        [("error", 2, 9, "Conv: `kernel` (3, 3, 3) has 3 entries but the input has 2 spatial axes (HxW)")],
    ),
    ("four_sizes_as_kernel", "input 3x8x8\nConv(4, 3x3x3x3)", [("error", 2, 9, "`3x3x3x3` is not a value")]),
    (
        "conv2d_on_a_signal",
        "input 1x8000\nConv2d(1, 16, 3)",
        [("error", 2, 1, "Conv2d needs an image (CxHxW); got a 1-D signal")],
    ),
    (
        "conv1d_on_an_image",
        "input 3x8x8\nConv1d(3, 16, 3)",
        [("error", 2, 1, "Conv1d needs a 1-D input (CxL); got an image 3x8x8")],
    ),
    (
        "pair_on_a_signal",
        "input 1x100\nMaxPool((2, 2))",
        [("error", 2, 9, "MaxPool: `kernel` (2, 2) has 2 entries but the input has 1 spatial axis (L)")],
    ),
    ("input_five_dims", "input 1x2x3x4x5\nReLU", [("error", 1, 7, "`input` takes N, CxL, CxHxW or CxDxHxW; got 5 dimensions")]),
    ("conv2d_in_channels", "input 3x8x8\nConv2d(16, 8, 3)", [("error", 2, 8, "Conv2d's in_channels is 16 but its input has 3")]),
    ("final_softmax", "input 8\nFC(4), Softmax", [("warning", 2, 8, "the network ends in Softmax")]),
    ("channels_last", "input 32x32x3\nReLU", [("warning", 1, 7, "input 32x32x3 looks channels-last")]),
]


@pytest.mark.parametrize("name,source,expected", CASES, ids=[c[0] for c in CASES])
def test_diagnostic(name: str, source: str | bytes, expected: list[tuple[str, int, int, str]]) -> None:
    net, diagnostics = cnndsl.check_source(source, f"{name}.cnn")
    found = [
        (d.severity, d.position.line if d.position else 0, d.position.column if d.position else 0, d.message) for d in diagnostics
    ]
    for severity, line, column, fragment in expected:
        assert any(s == severity and (ln, col) == (line, column) and fragment in m for s, ln, col, m in found), found
    has_error = any(s == "error" for s, *_ in expected)
    assert (net is None) == has_error
    for diagnostic in diagnostics:
        text = diagnostic.format()
        assert text.startswith(f"{name}.cnn:")
        if diagnostic.source_line is not None:
            caret_line = text.splitlines()[2]
            assert caret_line.strip() == "^"


def test_every_error_in_the_file_is_reported() -> None:
    source = "input 3x8x8\nFoo, Conv(3, 1, strde=1)\nBar(3)\nConv(0, 1)\nConv(3 3)\n"
    with pytest.raises(CnnDslError) as info:
        cnndsl.parse(source)
    positions = [(d.position.line, d.position.column) for d in info.value.diagnostics]
    # the syntax error is found first; the parser recovers, but a file with a syntax error is not checked further
    assert positions == [(5, 8)]
    with pytest.raises(CnnDslError) as info:
        cnndsl.parse(source.replace("Conv(3 3)", "Conv(3, 3)"))
    positions = [(d.position.line, d.position.column) for d in info.value.diagnostics]
    assert positions == [(2, 1), (2, 17), (3, 1), (4, 6)]


def test_several_syntax_errors_are_reported() -> None:
    _, diagnostics = cnndsl.check_source("input 3x8x8\nConv(3 3)\nReLU ReLU\nConv(3,,4)\n@\n")
    assert [(d.position.line, d.position.column) for d in diagnostics] == [(2, 8), (3, 6), (4, 8), (5, 1)]


def test_error_in_a_block_points_into_the_definition_with_a_note_once() -> None:
    source = "input 3x8x8\nblock B(c) = [Conv(c, 1), Relu6x]\nB(3), B(4)\n"
    _, diagnostics = cnndsl.check_source(source, "b.cnn")
    assert len(diagnostics) == 1
    diagnostic = diagnostics[0]
    assert (diagnostic.position.line, diagnostic.position.column) == (2, 27)
    assert diagnostic.notes == ("in block `B`, reached from `B(3)` at line 3, column 1",)
    assert diagnostic.hint == "did you mean `ReLU6`?"


def test_hints() -> None:
    def hint(source: str) -> str | None:
        return cnndsl.check_source(source)[1][0].hint

    assert hint("input 3x8x8\nConv(3, 1, strid=2)").startswith("did you mean `stride`? signature: Conv(out, kernel, stride=1")
    assert hint("input 3x8x8\nMaxPol(2)") == "did you mean `MaxPool`?"
    assert "insert `flatten`" in hint("input 3x8x8\nFC(10)")
    assert "signature: Conv(out, kernel" in hint("input 3x8x8\nConv(kernel=3)")


def test_strict_turns_fit_warnings_into_errors() -> None:
    source = "input 3x7x7\nConv(8, 3, stride=3)"
    assert cnndsl.parse(source).warnings
    with pytest.raises(CnnDslError, match="doesn't fit"):
        cnndsl.parse(source, strict=True)


@pytest.mark.parametrize(
    "source",
    [
        "input 3x224x224\nConv(64, 7, stride=2, pad=3)",  # ResNet's stem: only padding dropped
        "input 64x56x56\nConv(128, 1, stride=2)",  # the 1x1/2 shortcut: the gap is by design
        "input 3x224x224\nMaxPool(3, stride=2, pad=1)",
        "input 3x7x7\nMaxPool(2, ceil=true)",
    ],
)
def test_no_fit_warning_when_only_padding_or_the_stride_gap_is_dropped(source: str) -> None:
    assert cnndsl.parse(source).warnings == []


def test_golden_diagnostics(golden) -> None:
    out = []
    for name, source, _ in CASES:
        _, diagnostics = cnndsl.check_source(source, f"{name}.cnn")
        out.extend(d.format() for d in diagnostics)
    golden("diagnostics.txt", "\n".join(out) + "\n")


def test_fit_hint_gives_the_concrete_fix_with_its_arithmetic() -> None:
    def hint(source: str) -> str | None:
        return cnndsl.parse(source).warnings[0].hint

    assert hint("input 3x7x7\nConv(8, 3, stride=3)").startswith("pad=1 gives (7 - 3 + 2*1)/3 + 1 = 3 (or ")
    assert hint("input 3x224x224\nConv(96, 7, stride=2)").startswith("kernel=8 gives (224 - 8)/2 + 1 = 109 (or ")
    assert hint("input 3x8x7\nMaxPool(2)").startswith("kernel=(2, 3) gives (8 - 2)/2 + 1 = 4 and (7 - 3)/2 + 1 = 3")


def test_add_mismatch_names_the_branches_and_where_they_parted() -> None:
    (error,) = cnndsl.check_source("input 32x16x16\nAdd[Conv(64, 3, pad=1), BN, ReLU | Identity]")[1]
    assert error.notes == (
        "branch 0 gives 64x16x16: `Conv 64 3x3 pad 1` at line 2, column 5 turns 32x16x16 into 64x16x16",
        "branch 1 gives 32x16x16: it keeps the shape of the merge's input",
    )
    # channels differ, sizes agree: a 1x1 projection, no stride
    assert error.hint is not None and "`Conv(64, 1)` at the end of branch 1" in error.hint and "stride" not in error.hint
    (error,) = cnndsl.check_source("input 32x16x16\nAdd[Conv(64, 3, stride=2, pad=1), BN | ]")[1]
    assert "`Conv(64, 1, stride=2)` at the end of branch 1 turns 32x16x16 into 64x8x8" in (error.hint or "")
    (error,) = cnndsl.check_source("input 32x16x16\nAdd[MaxPool(2) | ]")[1]
    assert "`AvgPool(2)` or `Conv(32, 1, stride=2)`" in (error.hint or "")


def test_independent_shape_errors_after_the_first_are_reported() -> None:
    source = (
        "input 32x16x16\n"
        "Add[Conv(64, 3, pad=1) | Identity]\n"  # channels differ: checking goes on with branch 0's shape
        "Conv(64, 3, pad=1, groups=3)\n"  # groups must divide 64: the output is known all the same
        "Add[Conv(64, 3, stride=2, pad=1) | ]\n"
        "FC(10)\n"  # missing flatten: FC still gives 10 features
        "Linear(12, 5)\n"
    )
    _, diagnostics = cnndsl.check_source(source)
    assert [(d.position.line, d.message.split(":")[0]) for d in diagnostics] == [
        (2, "Add"),
        (3, "Conv"),
        (4, "Add"),
        (5, "FC needs a flat input; got an image 64x8x8"),
        (6, "Linear's in_features is 12 but its input has 10 features"),
    ]


def test_a_word_given_for_a_number_parameter_is_one_error(tmp_path) -> None:
    import subprocess
    import sys

    path = tmp_path / "w.cnn"
    path.write_text("network N(width=8)\ninput 3x32x32\nConv(width, 3), Conv(width, 3), Conv(width * 2, 3)\n")
    done = subprocess.run(
        [sys.executable, "-m", "cnndsl", "check", str(path), "--set", "width=abc"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert done.stderr.count("error:") == 1
    assert f"{path}:1:11: error: network parameter `width`: `abc` is not a number" in done.stderr


def test_kernel_written_as_hxw_is_a_pair() -> None:
    net = cnndsl.parse("input 3x8x8\nConv(16, 3x3), MaxPool(kernel=2x2), Conv(4, 1x3, pad=(0, 1))")
    assert [layer.args["kernel"] for layer in net.layers] == [(3, 3), (2, 2), (1, 3)]
    assert net.layers[0].describe == "Conv 16 3x3"
    assert net.output_shape == (4, 3, 3)


def test_input_with_spaces_and_quoted_words_say_how_to_write_them() -> None:
    (error,) = cnndsl.check_source("input 3 x 32 x 32\nReLU")[1]
    assert error.hint == "write 3x32x32 without spaces"
    (error,) = cnndsl.check_source('input 3x8x8\nConv(4, 3, pad="same")')[1]
    assert error.hint is not None and error.hint.startswith('no quotes: write `same`, not `"same"`')
