"""Text to AST: a Lark LALR parser built from shipped tables, a separator post-lexer, and friendly syntax errors."""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import BinaryIO, cast

import lark
from lark import Lark, Token, Transformer, UnexpectedCharacters, UnexpectedInput, UnexpectedToken
from lark.grammar import Rule
from lark.lark import PostLex
from lark.lexer import TerminalDef

from . import syntax
from .errors import DiagnosticSink, Position
from .limits import MAX_FILE_BYTES, MAX_NESTING, MAX_NUMBER, MAX_TOKENS

GRAMMAR_FILE = "cnn.lark"

_OPENERS = {"LSQB", "VBAR", "EQUAL", "COLON"}
_CLOSERS = {"RSQB", "VBAR"}
_ELEMENT_ENDS = {"RSQB", "RPAR", "NAME"}


def grammar_text() -> str:
    """The grammar, from the installed package or, in a source checkout, from grammars/."""
    packaged = resources.files("cnndsl").joinpath("grammars").joinpath(GRAMMAR_FILE)
    if packaged.is_file():
        return packaged.read_text(encoding="utf-8")
    return (Path(__file__).resolve().parent.parent / "grammars" / GRAMMAR_FILE).read_text(encoding="utf-8")


class SeparatorPostLex(PostLex):
    """Normalises commas and newlines into the separators the grammar expects.

    Doing this here keeps the grammar LALR(1): the rules never need optional
    separators, and `x` is only a repetition operator right after an element.
    """

    always_accept = ("_NEWLINE",)

    def process(self, stream: Iterator[Token]) -> Iterator[Token]:
        depth = 0
        prev: Token | None = None
        before_prev: Token | None = None
        pending: Token | None = None
        pending_newline = False
        in_def = False  # on a `def` line: an expression, where `*` and `x` are never repetition
        line_start = True
        def_candidate: Token | None = None  # `def` first on a line: DEF if a name follows
        for tok in stream:
            if def_candidate is not None:
                word, def_candidate = def_candidate, None
                if tok.type == "NAME":
                    word = Token.new_borrow_pos("DEF", word.value, word)
                    in_def = True
                yield word
                before_prev, prev = prev, word
            kind = tok.type
            if kind == "_NEWLINE" or (kind == "_COMMA" and depth == 0):
                if depth == 0:
                    pending = pending or tok
                    pending_newline = pending_newline or kind == "_NEWLINE"
                    in_def = in_def and kind != "_NEWLINE"
                continue

            if pending is not None:
                if prev is not None and prev.type not in _OPENERS and kind not in _CLOSERS:
                    sep = "_NL" if pending_newline else "_SEP"
                    yield Token.new_borrow_pos(sep, pending.value, pending)
                    before_prev, prev = prev, None
                line_start = line_start or pending_newline
                pending, pending_newline = None, False
            if line_start and depth == 0 and kind == "NAME" and tok.value.lower() == "def":
                def_candidate, line_start = tok, False
                continue
            line_start = False
            if kind == "LPAR":
                depth += 1
            elif kind == "RPAR":
                depth = max(0, depth - 1)
            if depth == 0 and not in_def and prev is not None and self._ends_element(prev, before_prev):
                if kind == "STAR" or (kind == "NAME" and tok.value in ("x", "X")):
                    tok = Token.new_borrow_pos("REPEAT", tok.value, tok)
                elif kind == "NAME" and tok.value[:1] in "xX" and tok.value[1:].isdigit():
                    assert tok.start_pos is not None and tok.column is not None  # the lexer's tokens carry positions
                    yield Token.new_borrow_pos("REPEAT", tok.value[0], tok)
                    count = Token(
                        "INT",
                        tok.value[1:],
                        tok.start_pos + 1,
                        tok.line,
                        tok.column + 1,
                        tok.end_line,
                        tok.end_column,
                        tok.end_pos,
                    )
                    before_prev, prev = Token("REPEAT", "x"), count
                    yield count
                    continue
            yield tok
            before_prev, prev = prev, tok
        if def_candidate is not None:
            yield def_candidate

    @staticmethod
    def _ends_element(prev: Token, before_prev: Token | None) -> bool:
        if prev.type in _ELEMENT_ENDS:
            return before_prev is None or before_prev.type not in ("NETWORK", "BLOCK")
        return prev.type == "INT" and before_prev is not None and before_prev.type == "REPEAT"


def grammar_sha256() -> str:
    return hashlib.sha256(grammar_text().encode("utf-8")).hexdigest()


def _build_parser(**options: object) -> Lark:
    return Lark(grammar_text(), parser="lalr", lexer="basic", postlex=SeparatorPostLex(), maybe_placeholders=True, **options)


def serialized_tables() -> tuple[dict, dict]:
    """The parser's LALR tables as plain literals (dicts, lists, tuples, strings, numbers), as Lark serializes them.

    scripts/build_parse_tables.py writes them into cnndsl/_parse_tables.py.
    """
    data, memo = _build_parser().memo_serialize([TerminalDef, Rule])
    data["options"]["postlex"] = None  # an object: given again when the tables are loaded
    return data, memo


@functools.lru_cache(maxsize=1)
def _parser() -> Lark:
    # Lark's own cache (`cache=True`) unpickles a file from the shared temporary folder,
    # which another local user can plant: never use it. The LALR tables ship as Python
    # literals in cnndsl/_parse_tables.py (building them takes ~90 ms, loading them ~3 ms);
    # when they were made from another grammar or another Lark version, build in memory.
    # The AST is built by callbacks during parsing (no parse tree is materialised):
    # positions come from the tokens each rule keeps, which is all the AST needs.
    from . import _parse_tables as tables

    if tables.GRAMMAR_SHA256 == grammar_sha256() and tables.LARK_VERSION == lark.__version__:
        return Lark._load_from_dict(tables.DATA, tables.MEMO, postlex=SeparatorPostLex(), transformer=ToAst())
    return _build_parser(transformer=ToAst())


def _pos(tok: Token) -> Position:
    return Position(tok.line or 1, tok.column or 1)


class LiteralError(Exception):
    """A literal the language cannot hold (raised by ToAst while parsing; reported like a syntax error)."""

    def __init__(self, message: str, tok: Token, hint: str) -> None:
        super().__init__(message)
        self.message, self.token, self.hint = message, tok, hint


def _whole_number(digits: str, tok: Token) -> int:
    """An integer literal, refused above MAX_NUMBER before converting (int() of thousands of digits raises or takes long)."""
    significant = digits.lstrip("0")
    if len(significant) > len(str(MAX_NUMBER)) or (significant and int(significant) > MAX_NUMBER):
        shown = f"{significant[:12]}... ({len(significant):,} digits)" if len(significant) > 24 else significant
        raise LiteralError(
            f"the number {shown} is too large; numbers are limited to 2^62 ({MAX_NUMBER:,})",
            tok,
            "sizes and counts this large cannot be built; check the number",
        )
    return int(significant or "0")


class ToAst(Transformer):
    """Parse-tree rules to frozen AST dataclasses, keeping each node's position."""

    def start(self, children: list) -> syntax.Program:
        return syntax.Program(tuple(c for c in children if c is not None))

    def network_decl(self, children: list) -> syntax.NetworkDecl:
        keyword, name, params = children
        return syntax.NetworkDecl(str(name), tuple(params or ()), _pos(keyword))

    def input_decl(self, children: list) -> syntax.InputDecl:
        tok = children[1]
        text = str(tok).lower().replace("×", "x")
        return syntax.InputDecl(tuple(_whole_number(d, tok) for d in text.split("x")), _pos(tok))

    def output_decl(self, children: list) -> syntax.OutputDecl:
        keyword, *names = children
        return syntax.OutputDecl(tuple(names), _pos(keyword))

    def output_name(self, children: list) -> syntax.OutputName:
        name, _, condition = children  # `name` or `name if condition` (the IF token is None without one)
        return syntax.OutputName(str(name), _pos(name), condition)

    def reference(self, children: list) -> syntax.Reference:
        tok = children[0]
        text = str(tok)[1:]
        return syntax.Reference(text.rstrip("*"), text.endswith("*"), _pos(tok))

    def defaults_decl(self, children: list) -> syntax.DefaultsDecl:
        return syntax.DefaultsDecl(tuple(children[1:]), _pos(children[0]))

    def block_def(self, children: list) -> syntax.BlockDef:
        _, name, params, body = children
        return syntax.BlockDef(str(name), tuple(params or ()), body, _pos(name))

    def func_def(self, children: list) -> syntax.FuncDef:
        _, name, params, body = children
        return syntax.FuncDef(str(name), tuple(params), body, _pos(name))

    def param_list(self, children: list) -> list[syntax.Param]:
        return [c for c in children if c is not None]

    def param(self, children: list) -> syntax.Param:
        name, default = children
        return syntax.Param(str(name), default, _pos(name))

    def labeled(self, children: list) -> syntax.Labeled:
        label, body = children
        return syntax.Labeled(str(label), body, _pos(label))

    def repeat(self, children: list) -> syntax.Repeat:
        body, op, count, _, index = children
        return syntax.Repeat(body, count, _pos(op), str(index) if index is not None else None)

    def call(self, children: list) -> syntax.Call:
        name, args = children
        return syntax.Call(str(name), tuple(args or ()), _pos(name))

    def arg_list(self, children: list) -> list[syntax.Arg]:
        return [c for c in children if c is not None]

    def positional_arg(self, children: list) -> syntax.Arg:
        value = children[0]
        return syntax.Arg(None, value, value.pos)

    def keyword_arg(self, children: list) -> syntax.Arg:
        name, value = children
        return syntax.Arg(str(name), value, _pos(name))

    def group(self, children: list) -> syntax.Group:
        bracket, items = children
        return syntax.Group(tuple(items or ()), _pos(bracket))

    def merge(self, children: list) -> syntax.Merge:
        name, _, *branches = children
        groups = []
        for branch in branches:
            groups.append(branch if branch is not None else syntax.Group((), _pos(name)))
        return syntax.Merge(str(name), tuple(groups), _pos(name))

    def branch(self, children: list) -> syntax.Group:
        items, _, condition = children  # `a, b` or `a, b if condition` (the IF token is None without one)
        return syntax.Group(tuple(items), items[0].pos, condition)

    def sequence(self, children: list) -> list:
        return list(children)

    def number(self, children: list) -> syntax.Number:
        tok = children[0]
        text = str(tok)
        value: int | float = _whole_number(text, tok) if tok.type == "INT" else float(text)
        return syntax.Number(value, _pos(tok))

    def dims(self, children: list) -> syntax.Expr:
        # `Conv(16, 3x3)`: HxW written as the summary prints it is the pair (3, 3), and `3x3x3`
        # the triple of a 3-D kernel. Four or more sizes are no argument value: left as a name,
        # the checker reports it as unknown.
        tok = children[0]
        parts = str(tok).lower().replace("×", "x").split("x")
        if len(parts) not in (2, 3):
            return syntax.Name(str(tok), _pos(tok))
        pos = _pos(tok)
        first, second, *rest = (syntax.Number(int(part), pos) for part in parts)
        return syntax.Pair(first, second, pos, tuple(rest))

    def name(self, children: list) -> syntax.Name:
        return syntax.Name(str(children[0]), _pos(children[0]))

    def pair(self, children: list) -> syntax.Pair:
        bracket, first, second, *rest = children
        return syntax.Pair(first, second, _pos(bracket), tuple(rest))

    def funccall(self, children: list) -> syntax.FuncCall:
        name, args = children
        return syntax.FuncCall(str(name), tuple(args), _pos(name))

    def compare(self, children: list) -> syntax.Compare:
        first, *rest = children
        pairs = tuple((str(rest[i]), rest[i + 1]) for i in range(0, len(rest), 2))
        return syntax.Compare(first, pairs, first.pos)

    def or_(self, children: list) -> syntax.BoolOp:
        left, _, right = children
        return syntax.BoolOp("or", left, right, left.pos)

    def and_(self, children: list) -> syntax.BoolOp:
        left, _, right = children
        return syntax.BoolOp("and", left, right, left.pos)

    def not_(self, children: list) -> syntax.Not:
        word, operand = children
        return syntax.Not(operand, _pos(word))

    def conditional(self, children: list) -> syntax.Conditional:
        then, _, test, _, otherwise = children
        return syntax.Conditional(then, test, otherwise, then.pos)

    def power(self, children: list) -> syntax.BinOp:
        base, _, exponent = children
        return syntax.BinOp("**", base, exponent, base.pos)

    def neg(self, children: list) -> syntax.Neg:
        sign, operand = children
        return syntax.Neg(operand, _pos(sign))

    def pos(self, children: list) -> syntax.Expr:
        return children[1]

    def _binop(op: str):  # type: ignore[misc]
        def build(self: ToAst, children: list) -> syntax.BinOp:
            return syntax.BinOp(op, children[0], children[1], children[0].pos)

        return build

    add = _binop("+")
    sub = _binop("-")
    mul = _binop("*")
    div = _binop("/")
    floordiv = _binop("//")
    mod = _binop("%")
    del _binop


# -- syntax errors -------------------------------------------------------------------

_TOKEN_WORDS = {
    "NAME": "a name",
    "INT": "a number",
    "DECIMAL": "a number",
    "DIMS": "a shape such as 3x32x32",
    "REF": "a reference such as `@name`",
    "LSQB": "`[`",
    "RSQB": "`]`",
    "LPAR": "`(`",
    "RPAR": "`)`",
    "VBAR": "`|`",
    "EQUAL": "`=`",
    "COLON": "`:`",
    "REPEAT": "`x`",
    "_SEP": "`,`",
    "_COMMA": "`,`",
    "_NL": "a new line",
    "$END": "the end of the file",
    "PLUS": "`+`",
    "MINUS": "`-`",
    "STAR": "`*`",
    "SLASH": "`/`",
    "PERCENT": "`%`",
    "DOUBLESLASH": "`//`",
    "POWER": "`**`",
    "COMPARE": "a comparison",
    "IF": "`if`",
    "ELSE": "`else`",
    "AND": "`and`",
    "OR": "`or`",
    "NOT": "`not`",
    "AS": "`as`",
}


_OPERATORS = {"PLUS", "MINUS", "STAR", "SLASH", "PERCENT", "POWER", "COMPARE", "AND", "OR", "IF", "ELSE"}
"""Operators that may follow an operand: a hint after one says "an operator" rather than listing them all."""


def _describe(token_type: str, value: str | None = None) -> str:
    if token_type in ("NAME", "INT", "DECIMAL", "DIMS") and value:
        return f"`{value}`"
    if token_type == "REF" and value:
        return f"`{value}`"
    if token_type in ("NETWORK", "INPUT", "OUTPUT", "DEFAULTS", "BLOCK", "DEF"):
        return f"`{(value or token_type).lower()}`"
    if token_type == "_NL":
        return "a new line"
    return _TOKEN_WORDS.get(token_type, f"`{value}`" if value else token_type)


_SPACED_INPUT = re.compile(r"\s*input\s+(\d+(?:\s*[x×*]\s*\d+)+)\s*(?:#.*)?", re.IGNORECASE)
_QUOTED = re.compile(r"""(["'])([^"'\n]*)\1""")


def _syntax_message(err: UnexpectedInput, text: str = "") -> tuple[str, str | None]:
    line = text.splitlines()[err.line - 1] if isinstance(err.line, int) and 0 < err.line <= text.count("\n") + 1 else ""
    if isinstance(err, UnexpectedCharacters):
        char = err.char
        if char in "\"'":
            quoted = _QUOTED.match(line, max(0, err.column - 1))
            word = quoted.group(2) if quoted else "same"
            return (
                f"unexpected quote `{char}`",
                f"no quotes: write `{word}`, not `{char}{word}{char}` (the language has no strings)",
            )
        if char == "@":
            return "`@` without a label", "a reference is `@` and the label of an earlier element, with no space: `@skip`"
        return f"unexpected character `{char}`", "layer names, numbers, `[ ]`, `( )`, `|`, `,`, `:` and `x` make up the language"
    spaced = _SPACED_INPUT.fullmatch(line)
    if spaced and isinstance(err, UnexpectedToken):
        dims = "x".join(re.split(r"\s*[x×*]\s*", spaced.group(1)))
        return f"unexpected {_describe(err.token.type, str(err.token.value))} in the input shape", f"write {dims} without spaces"
    assert isinstance(err, UnexpectedToken)
    tok = err.token
    # `accepts` is what the parser would take here; `expected` may hold more (LALR merges states'
    # lookaheads: after an operand, a new line is "expected" even inside parentheses).
    expected = set(getattr(err, "accepts", None) or ()) or set(err.expected)
    got = _describe(tok.type, str(tok.value) if tok.type != "$END" else None)
    words = sorted({_describe(e) for e in expected if not e.startswith("__") and e not in _OPERATORS})
    if expected & _OPERATORS:
        words.append("an operator")
    if tok.type == "$END":
        message = "unexpected end of file"
    else:
        message = f"unexpected {got}"
    hint: str | None = None
    if tok.type == "VBAR":
        message = "`|` outside a merge"
        hint = "`|` separates branches inside Add[...], Concat[...] or Mul[...]"
    elif "INT" in expected and "NAME" in expected and "LPAR" in expected and "LSQB" not in expected and "MINUS" not in expected:
        message = "`x` needs a count" if tok.type in ("$END", "_NL", "_SEP", "RSQB", "VBAR") else message
        hint = "write a repetition as `element x 3` or `[a, b]x2`"
    elif tok.type == "NAME" and ("_SEP" in expected or "_NL" in expected):
        hint = "separate elements with `,` or a new line"
    elif tok.type in ("INT", "DECIMAL") and "_NL" in expected:
        hint = "write the input shape as CxHxW (for example `input 3x32x32`) or N for a flat vector"
    elif words and len(words) <= 8:
        hint = "expected " + ", ".join(words[:-1]) + (" or " if len(words) > 1 else "") + words[-1]
    return message, hint


_BRACKET_EVENTS = re.compile(r"[()\[\]\n]|#[^\n]*")


def _bracket_scan(text: str, sink: DiagnosticSink) -> bool:
    """Check brackets balance and nesting depth before Lark sees the text (cheap, no recursion)."""
    stack: list[tuple[str, int, int]] = []
    line, line_start = 1, 0
    pairs = {")": "(", "]": "["}
    # Only brackets, line breaks and comments matter: a regular expression skips the rest.
    for match in _BRACKET_EVENTS.finditer(text):
        ch = match.group()
        if ch == "\n":
            line, line_start = line + 1, match.end()
            continue
        if ch[0] == "#":
            continue
        col = match.start() - line_start + 1
        if ch in "([":
            stack.append((ch, line, col))
            if len(stack) > MAX_NESTING:
                sink.error(
                    f"nesting deeper than {MAX_NESTING} levels",
                    Position(line, col),
                    "flatten the structure, or use repetition (`x N`) instead of nesting",
                )
                return False
        elif not stack or stack[-1][0] != pairs[ch]:
            if stack:
                opener, oline, ocol = stack[-1]
                closer = ")" if opener == "(" else "]"
                sink.error(
                    f"`{ch}` does not match the `{opener}` opened at line {oline}, column {ocol}",
                    Position(line, col),
                    f"missing `{closer}`?",
                )
            else:
                sink.error(f"`{ch}` has no matching `{pairs[ch]}`", Position(line, col), "remove it, or add the opening bracket")
            return False
        else:
            stack.pop()
    if stack:
        opener, oline, ocol = stack[-1]
        closer = ")" if opener == "(" else "]"
        sink.error(f"`{opener}` is never closed", Position(oline, ocol), f"missing `{closer}`")
        return False
    return True


_TOKEN = re.compile(r"#[^\n]*|[A-Za-z0-9_.]+|[^\sA-Za-z0-9_.,]")


def _token_count_ok(text: str, sink: DiagnosticSink) -> bool:
    """Refuse texts with more tokens than MAX_TOKENS before the (slower) parser sees them."""
    count = 0
    for match in _TOKEN.finditer(text):
        if match.group().startswith("#"):
            continue
        count += 1
        if count > MAX_TOKENS:
            sink.error(
                f"the file has more than {MAX_TOKENS:,} tokens",
                _position_at(text, match.start()),
                "use repetition (`x N`) and blocks instead of writing layers out",
            )
            return False
    return True


def _statement_span(text: str, offset: int) -> tuple[int, int]:
    """The top-level line (newline at bracket depth 0 to the next) holding `offset`."""
    depth = 0
    start = 0
    in_comment = False
    for i, ch in enumerate(text):
        if ch == "\n":
            in_comment = False
            if depth == 0:
                if i >= offset:
                    return start, i
                start = i + 1
        elif in_comment:
            continue
        elif ch == "#":
            in_comment = True
        elif ch in "([":
            depth += 1
        elif ch in ")]":
            depth = max(0, depth - 1)
    return start, len(text)


MAX_SYNTAX_ERRORS = 20


def parse_program(text: str, sink: DiagnosticSink) -> syntax.Program | None:
    """Parse text into a Program, adding every syntax error found to `sink`."""
    if not text.strip() or all(line.split("#", 1)[0].strip() == "" for line in text.splitlines()):
        sink.error("the file is empty", Position(1, 1), "a network needs at least an `input` line and one layer")
        return None
    if not _bracket_scan(text, sink) or not _token_count_ok(text, sink):
        return None
    parser = _parser()
    # After an error the program is refused anyway: the rest is parsed only to report
    # further syntax errors, starting after the broken statement (each part once, so
    # many errors cost one pass over the text, not one pass per error).
    part_start = 0
    lines_before = 0
    for _ in range(MAX_SYNTAX_ERRORS):
        part = text[part_start:]
        try:
            tree = parser.parse(part)
        except (UnexpectedInput, LiteralError) as err:
            hint: str | None
            if isinstance(err, LiteralError):
                message, hint = err.message, err.hint
                line, column, offset = err.token.line, err.token.column, err.token.start_pos
            else:
                message, hint = _syntax_message(err, part)
                line, column, offset = err.line, err.column, err.pos_in_stream
            line = line if isinstance(line, int) and line > 0 else part.count("\n") + 1
            column = column if isinstance(column, int) and column > 0 else 1
            sink.error(message, Position(lines_before + line, column), hint)
            offset = offset if isinstance(offset, int) and offset >= 0 else len(part)
            _, end = _statement_span(part, offset)
            if end >= len(part) or not part[end:].strip():
                return None
            lines_before += part.count("\n", 0, end + 1)
            part_start += end + 1
            continue
        # The LALR parser applies ToAst while it parses: the tree is already a Program.
        return None if sink.has_errors else cast(syntax.Program, tree)
    return None


def read_source_bytes(source: str | Path | BinaryIO) -> bytes:
    """At most MAX_FILE_BYTES + 1 bytes of a file (or an open binary stream such as standard input).

    One byte more than the limit is enough for decode_source to refuse the input: a huge
    or endless file (`/dev/zero`) is never read whole. Raises OSError.
    """
    if isinstance(source, (str, Path)):
        with open(source, "rb") as handle:
            return read_source_bytes(handle)
    chunks: list[bytes] = []
    left = MAX_FILE_BYTES + 1
    while left > 0:
        chunk = source.read(left)
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def decode_source(data: bytes, sink: DiagnosticSink) -> str | None:
    """Bytes to text: reject oversized input, invalid UTF-8 and NUL bytes with a position."""
    if len(data) > MAX_FILE_BYTES:
        sink.error(
            f"the file is larger than the limit of {MAX_FILE_BYTES:,} bytes"
            if len(data) == MAX_FILE_BYTES + 1
            else f"the file is {len(data):,} bytes; the limit is {MAX_FILE_BYTES:,}",
            _position_at(data, MAX_FILE_BYTES),
            "a network description is normally a few kilobytes",
        )
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        sink.text = data.decode("utf-8", "replace")  # to show the line with the bad byte
        before = data[: err.start]
        line = before.count(b"\n") + 1
        column = len(before) - (before.rfind(b"\n") + 1) + 1
        sink.error(f"invalid UTF-8 byte 0x{data[err.start]:02x}", Position(line, column), "save the file as UTF-8")
        return None
    text = text.removeprefix("\ufeff")
    return text if check_text(text, sink) else None


def check_text(text: str, sink: DiagnosticSink) -> bool:
    """Reject NUL bytes and oversized text (for text that did not come from bytes)."""
    if len(text) > MAX_FILE_BYTES:
        sink.error(
            f"the text is {len(text):,} characters; the limit is {MAX_FILE_BYTES:,}",
            _position_at(text, MAX_FILE_BYTES),
            "a network description is normally a few kilobytes",
        )
        return False
    nul = text.find("\x00")
    if nul >= 0:
        before = text[:nul]
        sink.error(
            "NUL byte in the source",
            Position(before.count("\n") + 1, nul - (before.rfind("\n") + 1) + 1),
            "the file looks binary; a .cnn file is plain text",
        )
        return False
    return True


def _position_at(data: str | bytes, offset: int) -> Position:
    """The line and column of an offset (where a size limit is crossed)."""
    before = data[:offset]
    newline = "\n" if isinstance(before, str) else b"\n"
    return Position(before.count(newline) + 1, offset - (before.rfind(newline) + 1) + 1)  # type: ignore[arg-type]
