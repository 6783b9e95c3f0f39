"""One file's outline: its top-level definitions (with signatures) and what it imports.

Threads: any. State: none here; the tree-sitter grammars live in a `Grammars` object that its
owner (one `RepoMap`) keeps, so nothing is cached at module level.

Python goes through the standard `ast` module. Other languages go through tree-sitter grammar
wheels (tree-sitter-javascript, -typescript, -go, -rust, -java, -c, -cpp), imported lazily the
first time a file of that language is outlined. A file that does not parse gets an `Outline`
with no symbols and the parser's message in `error`; nothing here raises on file content.
"""
from __future__ import annotations

import ast
import importlib
import logging
from types import MappingProxyType
from typing import Any, NamedTuple

log = logging.getLogger(__name__)


class Symbol(NamedTuple):
    """A definition: kind ('class', 'def', 'method', 'struct', ...), its name, the header line
    as written (collapsed to one line), its 1-based line and its depth (0 top level, 1 member).
    (Named tuples: a 10,000-file map holds ~100,000 of them, built, pickled and loaded fast.)"""
    kind: str
    name: str
    signature: str
    line: int
    depth: int = 0


class Outline(NamedTuple):
    symbols: tuple[Symbol, ...] = ()
    imports: tuple[str, ...] = ()
    error: str | None = None


_FIELD, _ITEM, _PART = "\x1f", "\x1e", "\x1d"
_NO_SEPARATORS = str.maketrans({_FIELD: "?", _ITEM: "?", _PART: "?"})


def pack(o: Outline) -> str:
    """One string per outline (control characters as separators): what crosses a process
    boundary and what the cache file holds. Pickling or JSON-encoding ~100,000 small tuples
    costs more than the parsing a cache saves; splitting strings does not."""
    syms = _ITEM.join(f"{s.kind}{_FIELD}{s.name}{_FIELD}{s.signature}{_FIELD}{s.line}{_FIELD}"
                      f"{s.depth}" for s in o.symbols)
    imports = _ITEM.join(o.imports)
    packed = f"{'' if o.error is None else '!' + o.error}{_PART}{imports}{_PART}{syms}"
    return packed


def unpack(packed: str) -> Outline:
    """The inverse of `pack`; ValueError on a string `pack` did not make."""
    error, imports, syms = packed.split(_PART)
    new = tuple.__new__
    symbols = []
    if syms:
        for item in syms.split(_ITEM):
            kind, name, sig, line, depth = item.split(_FIELD)
            symbols.append(new(Symbol, (kind, name, sig, int(line), int(depth))))
    return new(Outline, (tuple(symbols), tuple(imports.split(_ITEM)) if imports else (),
                         error[1:] if error else None))


LANGUAGES: MappingProxyType[str, str] = MappingProxyType({
    ".py": "python", ".pyi": "python",
    ".js": "javascript", ".jsx": "javascript", ".mjs": "javascript", ".cjs": "javascript",
    ".ts": "typescript", ".mts": "typescript", ".cts": "typescript", ".tsx": "tsx",
    ".go": "go", ".rs": "rust", ".java": "java",
    ".c": "c", ".h": "c", ".cc": "cpp", ".cpp": "cpp", ".cxx": "cpp", ".hpp": "cpp",
    ".hh": "cpp", ".hxx": "cpp",
})

MAX_SIGNATURE = 160


def language_of(rel: str) -> str | None:
    dot = rel.rfind(".")
    return LANGUAGES.get(rel[dot:].lower()) if dot > rel.rfind("/") else None


def _one_line(text: str) -> str:
    s = " ".join(text.split()).translate(_NO_SEPARATORS)
    return s if len(s) <= MAX_SIGNATURE else s[:MAX_SIGNATURE - 1] + "…"


# ---------------------------------------------------------------- Python through ast

def _header(lines: list[str], node: ast.AST) -> str:
    """The `def f(a, b) -> T` / `class C(Base)` text of a definition, up to its colon."""
    start = node.lineno - 1  # type: ignore[attr-defined]
    first = lines[start].strip() if start < len(lines) else ""
    if first.endswith(":") and "#" not in first and first.count("(") == first.count(")"):
        return _one_line(first[:-1])          # the usual one-line header
    body = getattr(node, "body", None)
    end = max(start + 1, body[0].lineno - 1) if body else start + 1
    text = "\n".join(lines[start:min(end, start + 12)])
    depth = 0
    for i, ch in enumerate(text):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == ":" and depth == 0:
            return _one_line(text[:i])
    return _one_line(text)


_COMPOUND = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.If, ast.For, ast.AsyncFor,
             ast.While, ast.Try, ast.With, ast.AsyncWith, ast.ExceptHandler,
             getattr(ast, "TryStar", ast.Try))


def _py_imports(stmts: list[ast.stmt], out: list[str]) -> None:
    """Imports anywhere in statement bodies (module level, try/if blocks, functions), without
    walking expressions: 'a.b' for `import a.b`, '.m:name' style for relative ones."""
    for st in stmts:
        t = type(st)
        if t is ast.Import:
            out.extend(a.name for a in st.names)  # type: ignore[attr-defined]
        elif t is ast.ImportFrom:
            # 'pkg:name': the submodule pkg/name.py when there is one, else pkg itself
            base = "." * st.level + (st.module or "")  # type: ignore[attr-defined]
            out.extend(base if a.name == "*" else f"{base}:{a.name}"
                       for a in st.names)  # type: ignore[attr-defined]
        elif isinstance(st, _COMPOUND):
            _py_imports(st.body, out)  # type: ignore[attr-defined]
            if t is not ast.FunctionDef and t is not ast.ClassDef:
                for attr in ("orelse", "finalbody", "handlers"):
                    sub = getattr(st, attr, None)
                    if sub:
                        _py_imports(sub, out)
        elif t is ast.Match:
            for case in st.cases:  # type: ignore[attr-defined]
                _py_imports(case.body, out)


AST_RACE_TRIES = 3      # attempts at a parse that CPython's shared AST state made fail


def _parse(text: str) -> ast.Module:
    """`ast.parse`, again when CPython 3.11 says "AST constructor recursion depth mismatch":
    the AST module's recursion counter is shared by every thread (python/cpython#106905), so
    a parse on another thread at the same moment makes a good file fail. It is not the
    file's fault, and the next try parses it."""
    for left in range(AST_RACE_TRIES - 1, -1, -1):
        try:
            return ast.parse(text)
        except SystemError as e:
            if left == 0 or "recursion depth mismatch" not in str(e):
                raise
            log.info("repository map: CPython's AST constructor raced another thread (%s); "
                     "parsing again", e)
    raise AssertionError("unreachable")


def outline_python(text: str) -> Outline:
    try:
        tree = _parse(text)
    except (RecursionError, MemoryError) as e:   # nesting deeper than the parser's stack
        return Outline(error=f"does not parse: nested too deeply ({type(e).__name__})")
    except (SyntaxError, ValueError) as e:  # ValueError: source holds NUL bytes
        where = f" (line {e.lineno})" if isinstance(e, SyntaxError) and e.lineno else ""
        msg = e.msg if isinstance(e, SyntaxError) else str(e)
        return Outline(error=f"does not parse: {msg}{where}")
    lines = text.splitlines()
    symbols: list[Symbol] = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            symbols.append(Symbol("def", node.name, _header(lines, node), node.lineno))
        elif isinstance(node, ast.ClassDef):
            symbols.append(Symbol("class", node.name, _header(lines, node), node.lineno))
            for member in node.body:
                if isinstance(member, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    symbols.append(Symbol("method", member.name, _header(lines, member),
                                          member.lineno, 1))
    imports: list[str] = []
    _py_imports(tree.body, imports)
    return Outline(tuple(symbols), tuple(dict.fromkeys(imports)))


# ---------------------------------------------------------------- other languages: tree-sitter

# language -> (grammar module, attribute of its language() function)
GRAMMAR_MODULES: MappingProxyType[str, tuple[str, str]] = MappingProxyType({
    "javascript": ("tree_sitter_javascript", "language"),
    "typescript": ("tree_sitter_typescript", "language_typescript"),
    "tsx": ("tree_sitter_typescript", "language_tsx"),
    "go": ("tree_sitter_go", "language"),
    "rust": ("tree_sitter_rust", "language"),
    "java": ("tree_sitter_java", "language"),
    "c": ("tree_sitter_c", "language"),
    "cpp": ("tree_sitter_cpp", "language"),
})

_JS_DEFS = MappingProxyType({
    "function_declaration": "function", "generator_function_declaration": "function",
    "class_declaration": "class", "abstract_class_declaration": "class",
    "interface_declaration": "interface", "type_alias_declaration": "type",
    "enum_declaration": "enum", "method_definition": "method",
    "lexical_declaration": "const", "variable_declaration": "const"})
_P = MappingProxyType
DEF_TYPES: MappingProxyType[str, MappingProxyType[str, str]] = _P({
    "javascript": _JS_DEFS, "typescript": _JS_DEFS, "tsx": _JS_DEFS,
    "go": _P({"function_declaration": "func", "method_declaration": "method",
              "type_declaration": "type"}),
    "rust": _P({"function_item": "fn", "struct_item": "struct", "enum_item": "enum",
                "trait_item": "trait", "impl_item": "impl", "mod_item": "mod",
                "type_item": "type", "function_signature_item": "fn"}),
    "java": _P({"class_declaration": "class", "interface_declaration": "interface",
                "enum_declaration": "enum", "record_declaration": "record",
                "method_declaration": "method", "constructor_declaration": "constructor"}),
    "c": _P({"function_definition": "function", "struct_specifier": "struct",
             "enum_specifier": "enum", "type_definition": "typedef", "declaration": "decl"}),
    "cpp": _P({"function_definition": "function", "struct_specifier": "struct",
               "class_specifier": "class", "enum_specifier": "enum",
               "type_definition": "typedef", "namespace_definition": "namespace",
               "declaration": "decl"}),
})
# containers whose members are listed one level down
MEMBER_BODIES = frozenset({
    "class_declaration", "abstract_class_declaration", "class_body", "interface_declaration",
    "impl_item", "trait_item", "class_specifier", "struct_specifier", "namespace_definition",
    "declaration_list", "field_declaration_list", "interface_body", "enum_body"})
WRAPPERS = frozenset({"export_statement", "decorated_definition", "template_declaration"})
IMPORT_TYPES = frozenset({"import_statement", "import_declaration", "import_spec",
                          "use_declaration", "preproc_include", "call_expression", "mod_item"})


class Grammars:
    """The tree-sitter languages loaded so far, for one owner. Not thread-safe on its own:
    its owner calls it under its lock."""

    def __init__(self) -> None:
        self._languages: dict[str, Any] = {}
        self._missing: dict[str, str] = {}

    def parser(self, lang: str) -> Any | None:
        """A fresh tree_sitter.Parser for lang, or None when its grammar is not installed
        (then `missing(lang)` says why)."""
        if lang in self._missing:
            return None
        language = self._languages.get(lang)
        if language is None:
            mod_name, attr = GRAMMAR_MODULES[lang]
            try:
                import tree_sitter
                mod = importlib.import_module(mod_name)
                language = tree_sitter.Language(getattr(mod, attr)())
            except (ImportError, AttributeError, ValueError) as e:
                self._missing[lang] = f"no {lang} parser ({mod_name}: {e})"
                log.warning("repository map: %s", self._missing[lang])
                return None
            self._languages[lang] = language
        import tree_sitter
        return tree_sitter.Parser(language)

    def missing(self, lang: str) -> str:
        return self._missing.get(lang, "")


def _name_of(node: Any) -> str:
    name = node.child_by_field_name("name")
    if name is not None:
        return name.text.decode("utf-8", "replace")
    if node.type == "impl_item":
        t = node.child_by_field_name("type")
        tr = node.child_by_field_name("trait")
        if t is not None:
            s = t.text.decode("utf-8", "replace")
            return f"{tr.text.decode('utf-8', 'replace')} for {s}" if tr is not None else s
    if node.type in ("lexical_declaration", "variable_declaration"):
        for d in node.named_children:
            if d.type == "variable_declarator":
                n = d.child_by_field_name("name")
                return n.text.decode("utf-8", "replace") if n is not None else ""
    if node.type == "type_declaration":
        for d in node.named_children:
            n = d.child_by_field_name("name")
            if n is not None:
                return n.text.decode("utf-8", "replace")
    decl = node.child_by_field_name("declarator")
    while decl is not None:
        if decl.type in ("identifier", "field_identifier", "qualified_identifier",
                         "destructor_name", "operator_name", "type_identifier"):
            return decl.text.decode("utf-8", "replace")
        nxt = decl.child_by_field_name("declarator")
        decl = nxt if nxt is not None else (decl.named_children[0] if decl.named_children else None)
    return ""


_FUNCTION_VALUES = frozenset({"arrow_function", "function_expression", "function", "class",
                    "generator_function"})


def _declares_function(node: Any) -> bool:
    """`const f = (a) => ...` / `const C = class ...` in JS, a function prototype in C."""
    for d in node.named_children:
        if d.type == "variable_declarator":
            v = d.child_by_field_name("value")
            return v is not None and v.type in _FUNCTION_VALUES
        if d.type == "function_declarator":
            return True
    return False


def _signature(node: Any, src: bytes) -> str:
    body = node.child_by_field_name("body")
    end = body.start_byte if body is not None else node.end_byte
    return _one_line(src[node.start_byte:min(end, node.start_byte + 400)]
                     .decode("utf-8", "replace").rstrip("{ ;\n"))


def _import_of(node: Any, lang: str) -> str | None:
    t = node.type
    if t == "call_expression":  # require('x')
        fn = node.child_by_field_name("function")
        args = node.child_by_field_name("arguments")
        if fn is None or args is None or fn.text != b"require" or not args.named_children:
            return None
        node = args.named_children[0]
        return node.text.decode("utf-8", "replace").strip("'\"`") if node.type == "string" else None
    if t == "mod_item":  # rust `mod foo;` (no body) brings in foo.rs
        return None if node.child_by_field_name("body") is not None else "mod:" + _name_of(node)
    if t in ("import_statement",) and lang in ("javascript", "typescript", "tsx"):
        src = node.child_by_field_name("source")
        return src.text.decode("utf-8", "replace").strip("'\"`") if src is not None else None
    if t == "import_spec":
        p = node.child_by_field_name("path")
        return p.text.decode("utf-8", "replace").strip('"`') if p is not None else None
    if t == "preproc_include":
        p = node.child_by_field_name("path")
        if p is not None and p.type == "string_literal":
            return p.text.decode("utf-8", "replace").strip('"')
        return None
    if t == "use_declaration":
        a = node.child_by_field_name("argument")
        return "use:" + a.text.decode("utf-8", "replace") if a is not None else None
    if t == "import_declaration" and lang == "java":
        for c in node.named_children:
            if c.type in ("scoped_identifier", "identifier"):
                return c.text.decode("utf-8", "replace")
    return None


def _walk_imports(node: Any, lang: str, out: list[str], depth: int) -> None:
    for child in node.named_children:
        if child.type in IMPORT_TYPES:
            imp = _import_of(child, lang)
            if imp:
                out.append(imp)
            if child.type == "call_expression":
                continue
        if depth < 6 and child.type not in ("string", "comment", "template_string"):
            _walk_imports(child, lang, out, depth + 1)


def _first_error(node: Any) -> Any | None:
    """The first ERROR or missing node, following has_error down (iteratively: a pathological
    file may nest thousands deep)."""
    while node is not None:
        if node.type == "ERROR" or node.is_missing:
            return node
        node = next((c for c in node.children if c.has_error), None)
    return None


def outline_tree_sitter(data: bytes, lang: str, grammars: Grammars) -> Outline:
    parser = grammars.parser(lang)
    if parser is None:
        return Outline(error=grammars.missing(lang))
    tree = parser.parse(data)
    root = tree.root_node
    if root.has_error:
        bad = _first_error(root)
        line = bad.start_point[0] + 1 if bad is not None else 0
        return Outline(error=f"does not parse ({lang} syntax error near line {line})")
    defs = DEF_TYPES[lang]
    symbols: list[Symbol] = []

    def visit(nodes: list[Any], depth: int) -> None:
        for n in nodes:
            if n.type in WRAPPERS:
                visit(n.named_children, depth)
                continue
            kind = defs.get(n.type)
            if kind is None:
                continue
            name = _name_of(n)
            if kind == "mod" and n.child_by_field_name("body") is None:
                continue  # rust `mod x;` brings in x.rs: an import, listed in the graph
            if kind in ("const", "decl") and not _declares_function(n):
                continue  # plain variables are not definitions worth a line in the map
            if name:
                symbols.append(Symbol(kind, name, _signature(n, data), n.start_point[0] + 1,
                                      depth))
            if depth == 0:
                body = n.child_by_field_name("body")
                if body is not None and (body.type in MEMBER_BODIES or n.type in MEMBER_BODIES):
                    visit(body.named_children, 1)

    visit(root.named_children, 0)
    imports: list[str] = []
    _walk_imports(root, lang, imports, 0)
    return Outline(tuple(symbols), tuple(dict.fromkeys(i.translate(_NO_SEPARATORS)
                                                      for i in imports)))


def outline(rel: str, data: bytes, grammars: Grammars) -> Outline:
    """The outline of one file's bytes; never raises on content."""
    lang = language_of(rel)
    if lang is None:
        return Outline()
    if lang == "python":
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            return Outline(error=f"not UTF-8 text ({e.reason} at byte {e.start})")
        return outline_python(text)
    return outline_tree_sitter(data, lang, grammars)
