#!/usr/bin/env python3
"""Import cycles between the source files of src/.

Every file is a module (src/a/b.rs and src/a/b/mod.rs are crate::a::b). A file depends on another
when it names one of its items through a `use` (brace groups expanded) or an inline
`crate::`/`super::`/`self::` path. A module's references to its own descendants are not counted:
a parent declares its children and re-exports their API, so the rule is that children, siblings
and cousins form no cycle. `#[cfg(test)]` modules at the end of a file are ignored.

Prints each cycle (a strongly connected component of two or more files, or a file that depends
on itself through others) and exits 1 if there is one; prints "no cycles" and exits 0 otherwise.
"""

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "src"


def module_of(path: Path) -> tuple:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return tuple(parts)


def strip(text: str) -> str:
    """Drops comments, string literals and the trailing test module."""
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', text)
    m = re.search(r"#\[cfg\(test\)\]\s*mod\s+\w+\s*\{", text)
    return text[: m.start()] if m else text


def expand(tree: str) -> list:
    """`a::{b, c::{d, e}}` -> ['a::b', 'a::c::d', 'a::c::e']."""
    tree = re.sub(r"\s+", "", tree)
    depth, start = 0, None
    for i, ch in enumerate(tree):
        if ch == "{":
            if depth == 0:
                start = i
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                prefix, inner, rest = tree[:start], tree[start + 1 : i], tree[i + 1 :]
                items, d, cur = [], 0, ""
                for c in inner:
                    if c == "," and d == 0:
                        items.append(cur)
                        cur = ""
                        continue
                    d += c == "{"
                    d -= c == "}"
                    cur += c
                items.append(cur)
                out = []
                for item in items:
                    if item:
                        out += expand(prefix + item + rest)
                return out
    return [tree]


def resolve(module: tuple, path: str, files: dict):
    """The file module that `path` (as written in `module`) points into, if any."""
    segs = [s for s in path.split("::") if s and not s.startswith(" as")]
    segs = [re.sub(r"\bas\b.*", "", s) for s in segs]
    if not segs:
        return None
    base = list(module)
    if segs[0] == "crate":
        base, segs = [], segs[1:]
    elif segs[0] in ("super", "self"):
        while segs and segs[0] in ("super", "self"):
            if segs[0] == "super":
                base = base[:-1]
            segs = segs[1:]
    else:
        return None  # an external crate or a local name
    full = base + segs
    for n in range(len(full), -1, -1):
        if tuple(full[:n]) in files:
            return tuple(full[:n])
    return None


def main() -> int:
    files = {module_of(p): p for p in ROOT.rglob("*.rs")}
    deps = {m: set() for m in files}
    for m, p in files.items():
        text = strip(p.read_text())
        paths = []
        for use in re.findall(r"\buse\s+([^;]+);", text):
            paths += expand(use)
        paths += re.findall(r"\b(?:crate|super|self)(?:::\w+)+", text)
        for path in paths:
            target = resolve(m, path.replace("::*", ""), files)
            if target is None or target == m or target[: len(m)] == m:
                continue  # itself, or one of its own descendants
            deps[m].add(target)
    # Tarjan's strongly connected components.
    index, low, stack, on, sccs, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in deps[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                sccs.append(comp)

    sys.setrecursionlimit(10000)
    for v in sorted(files):
        if v not in index:
            visit(v)
    name = lambda m: str(files[m].relative_to(ROOT.parent))
    if not sccs:
        print(f"no cycles among {len(files)} files")
        return 0
    for comp in sccs:
        members = sorted(comp)
        print("cycle: " + ", ".join(name(m) for m in members))
        for a in members:
            for b in sorted(deps[a] & set(comp)):
                print(f"  {name(a)} -> {name(b)}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
