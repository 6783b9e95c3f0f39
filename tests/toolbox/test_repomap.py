"""The repository map on real git repositories and real files: ranking, budget, .gitignore,
files that do not parse, binary files, the cache, and a 10,000-file repository."""
from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from toolbox.repomap import (RepoMap, estimate_tokens, failure_files, list_files,
                             project_documents, ticket_files)
from toolbox.repomap.outline import Grammars, outline, outline_python

EPIC = "Add multiply(a, b) to util.py with a test in tests/test_util.py"
OLD = time.time() - 3600


def write(root: Path, files: dict[str, str | bytes], old: bool = True) -> None:
    for rel, content in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(content)
        if old:   # as in a checkout: old enough that size+mtime can be trusted
            os.utime(p, (OLD, OLD))


def git(root: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)


def git_repo(root: Path, files: dict[str, str | bytes]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    git(root, "init", "-q")
    write(root, files)
    git(root, "add", "-A")
    return root


SMALL = {
    "util.py": '"""Small vector helpers."""\n\n\ndef add(a, b):\n    return a + b\n\n\n'
               "def scale_vector(v: list[float], k: float) -> list[float]:\n"
               "    return [x * k for x in v]\n",
    "app.py": "from util import add, scale_vector\n\n\ndef main():\n"
              "    print(add(1, 2), scale_vector([1.0], 2))\n",
    "tests/test_util.py": "from util import add\n\n\ndef test_add():\n    assert add(1, 2) == 3\n",
    "README.md": "# Vectors\n\nA tiny library.\n",
}


def test_issue_repository_lists_util_first_with_its_symbols(tmp_path):
    root = git_repo(tmp_path / "repo", SMALL)
    text = RepoMap(root).render(text=EPIC, budget_tokens=512)
    lines = text.splitlines()
    assert lines[0] == "util.py: (named by the task)"
    assert lines[1] == "  def add(a, b)"
    assert lines[2] == "  def scale_vector(v: list[float], k: float) -> list[float]"
    assert lines[3] == "tests/test_util.py: (named by the task)"
    assert "app.py: (imports util.py)" in lines
    assert "README.md:" in lines


def test_ranking_named_files_then_import_neighbours_then_the_rest(tmp_path):
    root = git_repo(tmp_path / "repo", {
        "core/engine.py": "from core import store\n\n\nclass Engine:\n    def run(self):\n        pass\n",
        "core/store.py": "def save(x):\n    return x\n",
        "core/__init__.py": "",
        "cli.py": "from core.engine import Engine\n\n\ndef main():\n    Engine().run()\n",
        "far.py": "import cli\n",
        "lonely.py": "def alone():\n    pass\n",
        "popular.py": "def used():\n    pass\n",
        "u1.py": "import popular\n", "u2.py": "import popular\n", "u3.py": "import popular\n",
    })
    m = RepoMap(root)
    ranked = m.ranked(text="Make core/engine.py retry")
    order = [r.path for r in ranked]
    assert order[0] == "core/engine.py" and ranked[0].reason == "named by the task"
    # one step away, both directions: what it imports, and what imports it
    assert set(order[1:3]) == {"core/store.py", "cli.py"}
    assert {r.reason for r in ranked[1:3]} == {"imported by core/engine.py",
                                               "imports core/engine.py"}
    assert order.index("far.py") == 3            # two steps away
    assert order.index("popular.py") < order.index("lonely.py")   # central before isolated
    # explicit focus (a ticket's files) works like naming, in the given order
    assert [r.path for r in m.ranked(focus=["lonely.py", "cli.py"])][:2] == ["lonely.py", "cli.py"]
    # an identifier the task mentions pulls in the file defining it
    assert m.ranked(text="why does scale_up fail? see save")[0].path == "core/store.py"


def test_python_imports_resolve_relative_packaged_and_src_layouts(tmp_path):
    root = git_repo(tmp_path / "repo", {
        "src/pkg/__init__.py": "",
        "src/pkg/a.py": "from .b import helper\nfrom . import c\n",
        "src/pkg/b.py": "def helper():\n    pass\n",
        "src/pkg/c.py": "try:\n    import pkg.d as d\nexcept ImportError:\n    d = None\n",
        "src/pkg/d.py": "X = 1\n",
        "tests/helpers.py": "def h():\n    pass\n",
        "tests/test_a.py": "import helpers\nfrom pkg import a\n",
    })
    g = RepoMap(root).graph()
    assert set(g.imports["src/pkg/a.py"]) == {"src/pkg/b.py", "src/pkg/c.py"}
    assert g.imports["src/pkg/c.py"] == ("src/pkg/d.py",)
    assert set(g.imports["tests/test_a.py"]) == {"tests/helpers.py", "src/pkg/a.py"}
    assert g.importers["src/pkg/b.py"] == ("src/pkg/a.py",)


def test_budget_is_never_exceeded_and_says_what_it_left_out(tmp_path):
    files = {f"m{i:03d}.py": f"def f{i}(a, b, c):\n    return a\n\n\nclass K{i}:\n"
                             f"    def m(self, x):\n        pass\n" for i in range(300)}
    root = git_repo(tmp_path / "repo", files)
    m = RepoMap(root)
    for budget in (5, 20, 64, 256, 1000):
        text = m.render(budget_tokens=budget)
        assert estimate_tokens(text) <= budget, budget
    text = m.render(budget_tokens=256)
    shown = [ln for ln in text.splitlines() if ln.startswith("m")]
    footer = text.splitlines()[-1]
    assert footer == f"(… {300 - len(shown)} more files not shown)"
    # symbols for the first files, bare paths for the next ones
    assert "  def f" in text and any(not ln.endswith(":") for ln in shown)
    whole = m.render(budget_tokens=100_000)
    assert "more files not shown" not in whole and whole.count("class K") == 300
    with pytest.raises(ValueError, match="positive token budget"):
        m.render(budget_tokens=0)


def test_gitignore_is_honoured_and_untracked_files_are_mapped(tmp_path):
    root = git_repo(tmp_path / "repo", {
        ".gitignore": "build/\n*.log\nsecret_*.py\n",
        "main.py": "def main():\n    pass\n",
        "build/gen.py": "def generated():\n    pass\n",
        "debug.log": "noise\n",
        "secret_keys.py": "KEY = 1\n",
    })
    write(root, {"new_module.py": "def fresh():\n    pass\n"})   # untracked, not ignored
    paths = set(RepoMap(root).outlines())
    assert {"main.py", "new_module.py", ".gitignore"} <= paths
    assert not paths & {"build/gen.py", "debug.log", "secret_keys.py"}
    assert not any(p.startswith(".clutch/") for p in paths)


def test_a_plain_directory_is_walked_without_venvs_node_modules_or_caches(tmp_path):
    root = tmp_path / "plain"
    write(root, {"a.py": "def a():\n    pass\n", "node_modules/x/index.js": "function x() {}\n",
                 ".venv/lib/site.py": "def s():\n    pass\n", "__pycache__/a.cpython-311.pyc": b"\0",
                 ".clutch/config.toml": "x = 1\n", "sub/b.py": "import a\n"})
    assert sorted(list_files(root)) == ["a.py", "sub/b.py"]
    assert RepoMap(root).graph().imports["sub/b.py"] == ("a.py",)


def test_a_file_that_does_not_parse_is_listed_with_its_error(tmp_path):
    root = git_repo(tmp_path / "repo", {
        "good.py": "def fine():\n    pass\n",
        "broken.py": "def oops(:\n    pass\n",
        "bad.ts": "export function f( {\n",
        "latin1.py": "x = '\xe9'\n".encode("latin-1"),
    })
    m = RepoMap(root)
    outs = m.outlines()
    assert outs["broken.py"].symbols == () and "does not parse" in outs["broken.py"].error
    assert "line 1" in outs["broken.py"].error
    assert "does not parse" in outs["bad.ts"].error
    assert "not UTF-8" in outs["latin1.py"].error
    assert outs["good.py"].symbols[0].name == "fine"
    text = m.render(budget_tokens=500)
    assert "broken.py:\n  (does not parse:" in text
    assert "good.py:\n  def fine()" in text


def test_binary_files_are_left_out(tmp_path):
    root = git_repo(tmp_path / "repo", {
        "logo.png": b"\x89PNG\r\n\x1a\n" + bytes(range(256)),
        "blob.dat": b"abc\0def",
        "notes.dat": "plain text with no NUL\n",
        "weird.py": b"def f():\n    pass\n\0\0",
        "ok.py": "def ok():\n    pass\n",
    })
    m = RepoMap(root)
    stats = m.refresh()
    paths = set(m.outlines())
    assert {"notes.dat", "ok.py"} <= paths
    assert not paths & {"logo.png", "blob.dat", "weird.py"}
    assert stats.binary == 3


def test_other_languages_through_tree_sitter(tmp_path):
    root = git_repo(tmp_path / "repo", {
        "web/app.ts": "import { helper } from './lib/helper';\n"
                      "export interface Props { name: string }\n"
                      "export class App {\n  render(p: Props): string { return helper(p.name); }\n}\n"
                      "export const make = (n: number) => new App();\n",
        "web/lib/helper.ts": "export function helper(s: string): string { return s; }\n",
        "web/old.js": "const h = require('./lib/helper');\nfunction legacy(a) { return a; }\n",
        "svc/main.go": 'package main\n\nimport "fmt"\n\ntype Server struct{ port int }\n\n'
                       "func (s *Server) Serve() error { fmt.Println(s.port); return nil }\n\n"
                       "func main() {}\n",
        "src/lib.rs": "mod util;\npub struct Point { x: f64 }\nimpl Point {\n"
                      "    pub fn norm(&self) -> f64 { self.x }\n}\npub fn origin() -> Point { Point { x: 0.0 } }\n",
        "src/util.rs": "pub fn clamp(v: i32) -> i32 { v }\n",
        "Main.java": "import java.util.List;\npublic class Main {\n"
                     "  public static void main(String[] args) {}\n  int size() { return 0; }\n}\n",
        "c/vec.c": '#include "vec.h"\nint dot(int *a, int *b, int n) { return 0; }\n'
                   "struct pair { int a; int b; };\n",
        "c/vec.h": "int dot(int *a, int *b, int n);\n",
    })
    m = RepoMap(root)
    outs = m.outlines()

    def names(p):
        assert outs[p].error is None, outs[p].error
        return [s.name for s in outs[p].symbols]

    assert names("web/app.ts") == ["Props", "App", "render", "make"]
    assert names("web/old.js") == ["legacy"]
    assert names("svc/main.go") == ["Server", "Serve", "main"]
    assert names("src/lib.rs") == ["Point", "Point", "norm", "origin"]
    assert names("Main.java") == ["Main", "main", "size"]
    assert names("c/vec.c") == ["dot", "pair"]
    app = outs["web/app.ts"].symbols
    assert app[2].depth == 1 and app[2].signature == "render(p: Props): string"
    g = m.graph()
    assert g.imports["web/app.ts"] == ("web/lib/helper.ts",)
    assert g.imports["web/old.js"] == ("web/lib/helper.ts",)
    assert g.imports["src/lib.rs"] == ("src/util.rs",)
    assert g.imports["c/vec.c"] == ("c/vec.h",)


def test_python_outline_signatures():
    out = outline_python(
        "import os\n\n@decorator\ndef plain(a, b=1, *args, **kw) -> int:\n    return 1\n\n"
        "async def fetch(\n    url: str,\n    timeout: float = 1.0,\n) -> bytes:\n    ...\n\n"
        "class Box(Base, metaclass=Meta):\n    def size(self): return 1\n"
        "    async def load(self, p: dict[str, int]): pass\n\n"
        "def one_liner(x): return {'a': x}\n")
    assert [(s.kind, s.signature, s.depth) for s in out.symbols] == [
        ("def", "def plain(a, b=1, *args, **kw) -> int", 0),
        ("def", "async def fetch( url: str, timeout: float = 1.0, ) -> bytes", 0),
        ("class", "class Box(Base, metaclass=Meta)", 0),
        ("method", "def size(self)", 1),
        ("method", "async def load(self, p: dict[str, int])", 1),
        ("def", "def one_liner(x)", 0),
    ]
    assert out.imports == ("os",)
    assert outline("x.py", b"\xff\xfe", Grammars()).error.startswith("not UTF-8")


def test_refresh_reads_only_what_changed_and_the_cache_survives_a_restart(tmp_path):
    root = git_repo(tmp_path / "repo", SMALL)
    m = RepoMap(root)
    first = m.refresh()
    assert (first.read, first.parsed) == (3, 3)     # README.md is listed without reading
    again = m.refresh()
    assert (again.reused, again.read, again.parsed) == (4, 0, 0)
    # an edit: only that file is read and outlined again
    write(root, {"util.py": SMALL["util.py"] + "\n\ndef multiply(a, b):\n    return a * b\n"})
    os.utime(root / "util.py", (OLD + 10, OLD + 10))
    edited = m.refresh()
    assert (edited.read, edited.parsed) == (1, 1)
    assert "def multiply(a, b)" in m.render(text=EPIC)
    # touched but unchanged: read to compare the digest, not parsed
    os.utime(root / "app.py", (OLD + 20, OLD + 20))
    touched = m.refresh()
    assert (touched.read, touched.parsed) == (1, 0)
    # a new process: the cache file answers, nothing is read
    fresh = RepoMap(root)
    restart = fresh.refresh()
    assert (restart.read, restart.parsed, restart.reused) == (0, 0, 4)
    assert fresh.render(text=EPIC) == m.render(text=EPIC)


def test_a_file_changed_within_its_mtime_tick_is_not_missed(tmp_path):
    root = git_repo(tmp_path / "repo", {"a.py": "def one():\n    pass\n"})
    m = RepoMap(root)
    write(root, {"a.py": "def uno():\n    pass\n"}, old=False)   # same size, fresh mtime
    m.refresh()
    st = os.stat(root / "a.py")
    (root / "a.py").write_text("def two():\n    pass\n")          # same size again...
    os.utime(root / "a.py", ns=(st.st_atime_ns, st.st_mtime_ns))   # ...and the same mtime
    m.refresh()
    assert [s.name for s in m.outlines()["a.py"].symbols] == ["two"]


def test_a_damaged_cache_is_rebuilt_not_fatal(tmp_path, caplog):
    root = git_repo(tmp_path / "repo", SMALL)
    RepoMap(root).refresh()
    cache = root / ".clutch" / "cache" / "repomap.json"
    doc = json.loads(cache.read_text())
    doc["files"]["util.py"][4] = "garbage"
    cache.write_text(json.dumps(doc))
    m = RepoMap(root)
    stats = m.refresh()
    assert "damaged" in caplog.text and stats.parsed == 3
    assert "def scale_vector" in m.render()
    cache.write_text("{not json")
    assert RepoMap(root).refresh().parsed == 3


def test_bad_roots_and_unknown_paths_get_clear_errors(tmp_path):
    with pytest.raises(NotADirectoryError, match="not a directory"):
        RepoMap(tmp_path / "missing")
    root = git_repo(tmp_path / "repo", SMALL)
    with pytest.raises(KeyError, match="nope.py is not in the repository map"):
        RepoMap(root).skeleton("nope.py")


def test_ticket_files_documents_and_failure_files(tmp_path):
    root = git_repo(tmp_path / "repo", {**SMALL, "conductor/product.md": "# Product\nVectors.\n",
                                        "conductor/tech-stack.md": "Python 3.11\n",
                                        "big.py": "".join(f"def f{i}(x):\n    return x\n\n"
                                                          for i in range(2000))})
    m = RepoMap(root)
    write(root, {"logo.png": b"\x89PNG\0"})
    tf = ticket_files(m, ["util.py", "tests/test_util.py", "big.py", "new.py", "logo.png"],
                      ["app.py", "README.md", "docs/missing.md"])
    assert tf.binary == ["logo.png"]
    assert tf.full["util.py"] == SMALL["util.py"]
    assert "def f1999(x)  # line" in tf.skeletons["big.py"]        # too big: skeleton only
    assert tf.skeletons["app.py"] == "def main()  # line 4\n"
    assert tf.full["README.md"] == SMALL["README.md"]               # a document has no skeleton
    assert tf.missing == ["new.py", "docs/missing.md"]
    docs = project_documents(root)
    assert list(docs) == ["conductor/product.md", "conductor/tech-stack.md", "README.md"]
    assert project_documents(tmp_path / "repo" / "conductor") == {}
    out = (f'Traceback (most recent call last):\n  File "{root}/app.py", line 5, in main\n'
           '  File "/usr/lib/python3.11/json/__init__.py", line 1\n'
           "tests/test_util.py:4: AssertionError\n")
    assert list(failure_files(m, out, ["util.py"])) == ["app.py", "tests/test_util.py", "util.py"]


def _generate(root: Path, n_files: int) -> None:
    """n_files Python modules in 50 packages, each importing two others."""
    for i in range(n_files):
        pkg, mod = i % 50, i // 50
        p = root / f"p{pkg:02d}" / f"m{mod:03d}.py"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(f"from p{(pkg + 1) % 50:02d}.m{mod:03d} import f{mod}\n"
                     f"import p{(pkg + 7) % 50:02d}.m{(mod + 3) % (n_files // 50):03d}\n\n\n"
                     f"class C{i}:\n    def go(self, a: int) -> int:\n        return a\n\n\n"
                     f"def f{mod}(x, y=2):\n    return x * y\n")
        os.utime(p, (OLD, OLD))


def test_ten_thousand_files_build_once_and_warm_refresh_reads_nothing(tmp_path):
    root = tmp_path / "big"
    root.mkdir()
    _generate(root, 10_000)
    git(root, "init", "-q")
    git(root, "add", "-A")
    m = RepoMap(root)
    cold = m.refresh()
    assert (cold.files, cold.read, cold.parsed) == (10_000, 10_000, 10_000)
    warm = m.refresh()
    assert (warm.reused, warm.read, warm.parsed) == (10_000, 0, 0)
    text = m.render(text="fix f7 in p03/m007.py", budget_tokens=1024)
    assert text.startswith("p03/m007.py: (named by the task)\n  class C353\n")
    assert estimate_tokens(text) <= 1024
    assert RepoMap(root).refresh().read == 0           # and from the cache file


def test_symlinks_are_not_followed_out_of_the_workspace(tmp_path):
    outside = tmp_path / "outside"
    write(outside, {"secret.py": "def password():\n    return 'hunter2'\n", "README.md": "secret\n"})
    root = git_repo(tmp_path / "repo", {"a.py": "def a():\n    pass\n"})
    (root / "leak.py").symlink_to(outside / "secret.py")
    (root / "README.md").symlink_to(outside / "README.md")
    m = RepoMap(root)
    assert "leak.py" not in m.outlines() and "password" not in m.render()
    assert project_documents(root) == {}


def test_pathological_nesting_is_an_error_not_a_crash(tmp_path):
    root = git_repo(tmp_path / "repo", {"deep.py": "x = " + "(" * 5000 + ")" * 5000 + "\n",
                                        "deep.js": "x = " + "[" * 20000 + "]" * 20000 + ";\n",
                                        "ok.py": "def ok():\n    pass\n"})
    outs = RepoMap(root).outlines()
    assert "does not parse" in outs["deep.py"].error
    assert outs["ok.py"].symbols[0].name == "ok"
    assert "deep.js" in outs     # parsed or not, listed


def test_a_worktree_map_seeded_with_the_workspace_map_parses_only_what_differs(tmp_path):
    root = git_repo(tmp_path / "repo", SMALL)
    git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    main = RepoMap(root)
    main.refresh()
    wt = tmp_path / "wt"
    git(root, "worktree", "add", "-q", str(wt), "-b", "track")
    (wt / "util.py").write_text(SMALL["util.py"] + "\n\ndef multiply(a, b):\n    return a * b\n")
    m = RepoMap(wt, persist=False, seed=main)
    stats = m.refresh()
    assert (stats.read, stats.parsed) == (3, 1)          # only the edited util.py is parsed
    assert "def multiply(a, b)" in m.skeleton("util.py")
    assert not (wt / ".clutch").exists()                 # nothing written into the worktree
    assert "multiply" not in main.skeleton("util.py")    # the seed is not changed


def test_one_map_shared_by_threads_that_refresh_and_render_while_files_change(tmp_path):
    from conftest import run_threads
    root = git_repo(tmp_path / "repo", {**SMALL, **{f"mod{i}.py": f"def f{i}():\n    pass\n"
                                                    for i in range(50)}})
    m = RepoMap(root)
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for k in range(20):
                if i == 0:
                    write(root, {f"mod{k}.py": f"def g{k}(x):\n    return x\n"}, old=False)
                    m.refresh()
                else:
                    text = m.render(text=EPIC, budget_tokens=300)
                    assert text.startswith("util.py: (named by the task)\n")
                    assert estimate_tokens(text) <= 300
        except BaseException as e:  # collected and re-raised in the test thread below
            errors.append(e)

    run_threads(work, 4)
    assert not errors, errors
    m.refresh()
    assert [s.name for s in m.outlines()["mod19.py"].symbols] == ["g19"]


def test_a_parse_that_cpython_races_on_another_thread_is_parsed_again(tmp_path, monkeypatch):
    # CPython 3.11 shares the AST constructor's recursion counter between threads
    # (python/cpython#106905): a parse on one thread while another thread parses can raise
    # "SystemError: AST constructor recursion depth mismatch" for a good file. Seen here when a
    # worker's tree map and a prepared tree's map were built at the same moment.
    import ast
    real = ast.parse
    raced = []

    def racing(text, *a, **kw):
        if not raced:
            raced.append(1)
            raise SystemError("AST constructor recursion depth mismatch (before=90, after=65)")
        return real(text, *a, **kw)
    monkeypatch.setattr(ast, "parse", racing)
    out = outline_python("def fine(a):\n    return a\n")
    assert raced and out.error is None and out.symbols[0].name == "fine"

    def always(text, *a, **kw):
        raise SystemError("AST constructor recursion depth mismatch (before=1, after=2)")
    monkeypatch.setattr(ast, "parse", always)
    with pytest.raises(SystemError):        # not a race that passes: said, not hidden
        outline_python("def fine(a):\n    return a\n")


def test_an_outline_that_failed_is_tried_again_at_the_next_refresh(tmp_path, monkeypatch):
    import toolbox.repomap.scan as scan
    root = git_repo(tmp_path / "repo", {"good.py": "def fine():\n    pass\n"})
    real = scan.outline

    def broken(*a, **kw):
        raise SystemError("AST constructor recursion depth mismatch (before=3, after=4)")
    monkeypatch.setattr(scan, "outline", broken)
    m = RepoMap(root)
    m.refresh()
    assert "outline failed: SystemError" in m.outlines()["good.py"].error
    monkeypatch.setattr(scan, "outline", real)
    m.refresh()                              # the file did not change: it is outlined again
    out = m.outlines()["good.py"]
    assert out.error is None and out.symbols[0].name == "fine"
    m2 = RepoMap(root)                       # and the cache on disk holds the good outline
    m2.refresh()
    assert m2.outlines()["good.py"].symbols[0].name == "fine"


def test_a_fresh_checkout_is_trusted_a_moment_later_where_timestamps_are_fine(tmp_path):
    """A file's size and mtime are trusted once its mtime is past the filesystem's clock tick:
    50 ms for a timestamp with a fraction of a second (ext4, xfs, APFS...), 2 s for a whole
    second (FAT, HFS+). A worktree checked out a moment ago is then not read twice."""
    from toolbox.repomap.mapper import racy
    s = 1_000_000_000
    now = 1_700_000_000 * s + 500_000_000
    assert racy(now, now - 10_000_000) and not racy(now, now - 60_000_000)
    assert racy(now, 1_700_000_000 * s) and racy(now, 1_699_999_999 * s)   # whole seconds
    assert not racy(now, 1_699_999_997 * s)
    root = git_repo(tmp_path / "repo", {"fine.py": "def a():\n    pass\n",
                                        "coarse.py": "def b():\n    pass\n"})
    t = time.time_ns()
    os.utime(root / "fine.py", ns=(t - 200_000_000, t - 200_000_000))    # 0.2 s ago
    whole = (t // s + 5) * s      # a whole second (5 s ahead: racy for as long as this runs)
    os.utime(root / "coarse.py", ns=(whole, whole))
    m = RepoMap(root, persist=False)
    assert m.refresh().read == 2
    second = m.refresh()
    assert second.read == 1 and second.reused == 1        # only coarse.py read again
    assert m.outlines()["coarse.py"].symbols[0].name == "b"


def test_a_refresh_told_what_changed_reads_only_that_and_maps_what_a_whole_one_maps(tmp_path):
    """A tree switched between two commits by Clutch, which nobody else writes: told the
    paths that differ, the refresh reads those alone (no listing, no stat of the rest) and
    ends with the map a whole refresh of the same tree makes, in the same order."""
    root = git_repo(tmp_path / "repo", {**SMALL, "gone.py": "def gone():\n    pass\n",
                                        "old_name.py": "def moved():\n    pass\n"})
    git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    m = RepoMap(root, persist=False)
    m.refresh()
    time.sleep(0.06)                        # past the racy window: nothing is read again
    assert m.refresh().read == 0
    (root / "util.py").write_text(SMALL["util.py"] + "\n\ndef multiply(a, b):\n    return a * b\n")
    (root / "gone.py").unlink()
    git(root, "mv", "old_name.py", "new_name.py")
    (root / "pkg").mkdir()
    (root / "pkg" / "added.py").write_text("from util import multiply\n\n\ndef twice(x):\n"
                                           "    return multiply(x, 2)\n")
    git(root, "add", "-A")
    changed = ["gone.py", "new_name.py", "old_name.py", "pkg/added.py", "util.py"]
    stats = m.refresh(only=changed)
    assert (stats.read, stats.parsed) == (3, 3)     # util.py, new_name.py, pkg/added.py
    whole = RepoMap(root, persist=False)
    whole.refresh()
    assert list(m.entries()) == list(whole.entries())
    assert {p: e.outline for p, e in m.entries().items()} == \
        {p: e.outline for p, e in whole.entries().items()}
    assert m.render(focus=["pkg/added.py"]) == whole.render(focus=["pkg/added.py"])
    # the contract: what it is not told is not looked at (a whole refresh sees it)
    time.sleep(0.06)
    m.refresh(only=changed)                 # the files just written, read once more
    (root / "app.py").write_text("def other():\n    pass\n")
    assert m.refresh(only=["util.py"]).read == 0
    assert "def other()" not in m.skeleton("app.py")
    assert m.refresh().read == 1 and "def other()" in m.skeleton("app.py")


def test_a_refresh_told_what_changed_keeps_a_too_recent_entry_marked_for_the_next(tmp_path):
    root = git_repo(tmp_path / "repo", SMALL)
    m = RepoMap(root, persist=False)
    (root / "util.py").write_text("def fresh():\n    pass\n")    # mtime: now
    m.refresh()
    assert m.entries()["util.py"].racy
    assert m.refresh(only=["app.py"]).read == 0        # app.py is unchanged; util.py is
    assert m.entries()["util.py"].racy                 # not read, and still to be read again
    time.sleep(0.06)
    assert m.refresh().read >= 1 and not m.entries()["util.py"].racy
