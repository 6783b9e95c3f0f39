"""Repository map: build time of a 10,000-file repository, cold and warm, beside baselines.

The repository is generated (seed 7) as a git repository with every file added: 7,000 Python
modules in 100 packages (each 40–120 lines: imports of 1–4 sibling or other-package modules, 2–6
functions, 1–2 classes with 2–5 methods), 1,200 TypeScript, 400 Go, 400 Markdown, 500 JSON and
500 PNG files (binary; left out), plus a .gitignore'd build/ folder of 2,000 files the map must
not see. Figures, each the median of 3 runs (all printed):

- baseline `git ls-files` alone, and `git ls-files` + reading every listed file (os.walk's cost
  of the same bytes): the floor any map pays;
- cold: a new RepoMap with no cache file (lists, reads, hashes and outlines every file);
- warm (same object): refresh() again with nothing changed (lists and stats, reads nothing);
- warm (from disk): a new RepoMap that loads .clutch/cache/repomap.json, then refresh();
- after touching 10 files' content: refresh() re-reads and re-parses only those;
- render: the map for a ticket naming one module, cut to 2,048 tokens;
- Tier 3 requests: for 20 tickets (each targets one module, with two context files), the
  tokens of the sections a spawn sends (prompts.tier3_sections: system prompt, the map focused on
  the ticket's files at the engine's worker budget, skeletons, target in full, ticket) and the
  share that is a prefix shared by every Tier 3 request; then the same with the six tool
  declarations counted (a provider sends them before the contents, the same for every worker).
Targets: cold <= 2 s, warm <= 100 ms.
"""
from __future__ import annotations

import _common  # noqa: F401  (sets sys.path: repository root first)

import os
import random
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import json

import prompts
from engine.curation import WORKER_MAP_TOKENS
from models import estimate_tokens
from toolbox.repomap import RepoMap, ticket_files
from tools import TOOL_SPECS

# the tool declarations as a provider sends them (name, description, JSON schema): shared
TOOLS_TOKENS = estimate_tokens(json.dumps([{"name": t.name, "description": t.description,
                                            "parameters": t.parameters} for t in TOOL_SPECS]))

OLD = time.time() - 3600   # file times an hour back, as in a checkout (fresh ones are re-read)


def _py_module(rng: random.Random, pkg: int, mod: int, n_pkgs: int, n_mods: int) -> str:
    lines = ['"""Generated module."""', "from __future__ import annotations", "import os"]
    for _ in range(rng.randint(1, 4)):
        p, m = rng.randrange(n_pkgs), rng.randrange(n_mods)
        lines.append(f"from pkg{p:03d}.mod{m:03d} import helper_{m}_0")
    for c in range(rng.randint(1, 2)):
        lines.append(f"\n\nclass Thing{pkg}_{mod}_{c}(object):")
        lines.append('    """A generated class."""')
        for k in range(rng.randint(2, 5)):
            lines.append(f"    def method_{k}(self, a: int, b: str = 'x') -> str:")
            lines.append(f"        value = a * {k} + len(b)")
            lines.append("        if value > 10:\n            return b * 2")
            lines.append("        return str(value)\n")
    for f in range(rng.randint(2, 6)):
        lines.append(f"\n\ndef helper_{mod}_{f}(items: list[int], scale: float = 1.0) -> list[float]:")
        lines.append("    out = []\n    for i in items:\n        out.append(i * scale)")
        lines.append("    return out")
    return "\n".join(lines) + "\n"


def make_repo(root: Path, seed: int = 7) -> int:
    rng = random.Random(seed)
    n_pkgs, n_mods = 100, 70
    count = 0
    for p in range(n_pkgs):
        d = root / f"pkg{p:03d}"
        d.mkdir(parents=True)
        (d / "__init__.py").write_text("")
        count += 1
        for m in range(n_mods - 1):
            (d / f"mod{m:03d}.py").write_text(_py_module(rng, p, m, n_pkgs, n_mods - 1))
            count += 1
    web = root / "web" / "src"
    for i in range(1200):
        sub = web / f"area{i % 40:02d}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"comp{i:04d}.ts").write_text(
            f"import {{ util{(i + 1) % 1200} }} from './comp{(i + 1) % 1200:04d}';\n"
            f"export interface Props{i} {{ name: string; size: number }}\n"
            f"export function util{i}(p: Props{i}): string {{\n  return p.name + p.size;\n}}\n"
            f"export class Widget{i} {{\n  render(x: number): string {{ return String(x); }}\n}}\n")
        count += 1
    for i in range(400):
        sub = root / "svc" / f"g{i % 20:02d}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"s{i:03d}.go").write_text(
            f"package g{i % 20:02d}\n\nimport \"fmt\"\n\ntype Server{i} struct {{ n int }}\n\n"
            f"func (s *Server{i}) Serve(port int) error {{\n\tfmt.Println(port)\n\treturn nil\n}}\n\n"
            f"func New{i}() *Server{i} {{ return &Server{i}{{}} }}\n")
        count += 1
    docs = root / "docs"
    docs.mkdir()
    for i in range(400):
        (docs / f"page{i:03d}.md").write_text(f"# Page {i}\n\nText.\n" * 5)
        count += 1
    data = root / "data"
    data.mkdir()
    for i in range(500):
        (data / f"d{i:03d}.json").write_text('{"k": %d}\n' % i)
        (data / f"img{i:03d}.png").write_bytes(b"\x89PNG\r\n\x1a\n\0\0" + os.urandom(200))
        count += 2
    (root / ".gitignore").write_text("build/\n")
    build = root / "build"
    build.mkdir()
    for i in range(2000):
        (build / f"gen{i:04d}.py").write_text("def generated():\n    pass\n")
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            os.utime(os.path.join(dirpath, f), (OLD, OLD))
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    return count + 1


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def med(xs: list[float]) -> str:
    return f"{statistics.median(xs) * 1000:8.1f} ms  (runs: {', '.join(f'{x * 1000:.1f}' for x in xs)})"


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="repomap-bench-"))
    try:
        root = tmp / "repo"
        root.mkdir()
        n = make_repo(root)
        print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; {n} files "
              f"generated (+2,000 ignored). The cold build is CPU-bound (ast.parse over a process "
              f"pool): it moves with the machine's load")

        def ls() -> list[str]:
            out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                                  "--exclude-standard"], cwd=root, capture_output=True,
                                 check=True).stdout
            return [p for p in out.decode().split("\0") if p]

        def ls_read() -> None:
            for p in ls():
                with open(root / p, "rb") as f:
                    f.read()

        base_ls = [timed(ls) for _ in range(3)]
        base_read = [timed(ls_read) for _ in range(3)]
        cache = root / ".clutch" / "cache" / "repomap.json"
        cold, warm, disk, stats = [], [], [], None
        for _ in range(3):
            if cache.exists():
                cache.unlink()
            m = RepoMap(root)
            cold.append(timed(m.refresh))
            stats = m.last_stats
            warm.append(timed(m.refresh))
            m2 = RepoMap(root)
            disk.append(timed(m2.refresh))
        assert m.last_stats is not None and m.last_stats.read == 0, m.last_stats
        changed = sorted(root.glob("pkg00*/mod00*.py"))[:10]
        for p in changed:
            p.write_text(p.read_text() + "\n\ndef added_later(x):\n    return x\n")
            os.utime(p, (OLD + 60, OLD + 60))
        inc = timed(m.refresh)
        inc_stats = m.last_stats
        render = [timed(lambda: m.render(focus=["pkg042/mod007.py"],
                                         text="Fix helper_7_0 in pkg042/mod007.py",
                                         budget_tokens=2048)) for _ in range(3)]
        print(f"mapped {stats.files} files ({stats.binary} binary left out), "
              f"cold parsed {stats.parsed}")
        print(f"baseline git ls-files            {med(base_ls)}")
        print(f"baseline git ls-files + read all {med(base_read)}")
        c = statistics.median(cold)
        w = statistics.median(warm)
        print(f"cold build                       {med(cold)}   target <= 2000 ms: "
              f"{'PASS' if c <= 2 else 'MISS'}")
        print(f"warm build (same object)         {med(warm)}   target <= 100 ms: "
              f"{'PASS' if w <= 0.1 else 'MISS'}")
        print(f"warm build (cache file, new obj) {med(disk)}")
        print(f"10 files edited                  {inc * 1000:8.1f} ms  (read {inc_stats.read}, "
              f"parsed {inc_stats.parsed})")
        print(f"render for a ticket, 2,048 tokens {med(render)}  (graph built on first)")
        track_map = m.render(text="Add retries to the helpers of pkg000 to pkg095",
                             budget_tokens=2048)
        for map_shared in (False, True):
            tier3_figures(m, map_shared, track_map)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def tier3_figures(m: RepoMap, map_shared: bool, track_map: str) -> None:
    totals, shared, spawn = [], [], []
    for k in range(20):
        target = f"pkg{k * 5:03d}/mod{k:03d}.py"
        context = [f"pkg{k * 5:03d}/mod{k + 1:03d}.py", f"pkg{k * 5 + 1:03d}/mod{k:03d}.py"]
        t = time.perf_counter()
        tf = ticket_files(m, [target], context)
        secs = prompts.tier3_sections(
            f"T-{k:03d}", f"Add a retry to helper_{k}_0 in {target}", "Core", [target], [],
            track_map if map_shared else
            m.render(focus=[target, *context], text=f"helper_{k}_0",
                     budget_tokens=WORKER_MAP_TOKENS),
            full_files=tf.full, skeletons=tf.skeletons, context_files=context,
            missing=tf.missing, map_shared=map_shared)
        spawn.append(time.perf_counter() - t)
        totals.append(sum(s.tokens for s in secs))
        shared.append(prompts.shared_prefix_tokens(secs))
    tot, sh = statistics.median(totals), statistics.median(shared)
    how = "one map per track (shared)" if map_shared else "map focused per ticket"
    print(f"Tier 3 sections, 20 tickets, {how}: median {tot:.0f} tokens "
          f"(min {min(totals)}, max {max(totals)}); shared prefix {sh:.0f} tokens "
          f"= {sh / tot:.0%}; assembling one: {statistics.median(spawn) * 1000:.1f} ms")
    t_tot, t_sh = tot + TOOLS_TOKENS, sh + TOOLS_TOKENS
    print(f"  with the {len(TOOL_SPECS)} tool declarations ({TOOLS_TOKENS} tokens, shared): "
          f"median {t_tot:.0f} tokens per Tier 3 request, shared prefix {t_sh:.0f} = "
          f"{t_sh / t_tot:.0%}")


if __name__ == "__main__":
    main()
