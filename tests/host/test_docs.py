# The documentation a newcomer follows: every link in it leads somewhere inside this repository, the
# README stays a short front page, and its map names every document in docs/.
import fnmatch
import os
import re
import subprocess
from urllib.parse import unquote

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
README_MAX_LINES = 120
OUTSIDE_FOLDER = "../" + "shared"  # the founders' folder beside the clone: it does not exist in a clone

# [text](target), ![alt](target "title"), [text]: target, <a href="target">, <img src="target">
INLINE = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+[\"'(][^)]*)?\)")
REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.M)
HTML = re.compile(r"<(?:a|img)\b[^>]*?\b(?:href|src)\s*=\s*[\"']([^\"']+)[\"']", re.I)
FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)
CODE_SPAN = re.compile(r"`[^`\n]*`")


def tracked(*patterns):
    """The repository's files (tracked, or new and not ignored: what the next commit may hold). Outside
    a git checkout (a copy, an unpacked archive) every file but the build output and the venv."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", *patterns],
                         cwd=ROOT, capture_output=True)
    if out.returncode == 0 and os.path.isdir(os.path.join(ROOT, ".git")):
        return sorted({p for p in out.stdout.decode().split("\0") if p and os.path.isfile(os.path.join(ROOT, p))})
    found = []
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in (".git", ".venv", "build", "__pycache__", ".hypothesis")]
        for f in files:
            rel = os.path.relpath(os.path.join(folder, f), ROOT)
            if not patterns or any(fnmatch.fnmatch(rel, p) for p in patterns):
                found.append(rel)
    return sorted(found)


def links(text):
    """The link targets of a Markdown text, leaving out code blocks and code spans (they are not links)."""
    text = CODE_SPAN.sub("", FENCE.sub("", text))
    return [m.group(1) for rx in (INLINE, REFERENCE, HTML) for m in rx.finditer(text)]


def anchors(text):
    """The #fragments a Markdown page's headings get, as GitHub makes them (a repeated one gets -1, -2...)."""
    seen = {}
    out = set()
    for m in re.finditer(r"^#{1,6}\s+(.*?)\s*#*\s*$", FENCE.sub("", text), re.M):
        slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else "%s-%d" % (slug, n))
    return out


def broken_links(path, text, read=None):
    """(target, why) for each relative link of the file at `path` (relative to ROOT) that leads nowhere:
    no such file, outside the repository, or to a heading that a Markdown page does not have."""
    read = read or _read
    out = []
    for target in links(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # https:, http:, mailto:...
            if not target.lower().startswith(("http://", "https://", "mailto:")):
                out.append((target, "not a web link"))
            continue
        where, _, fragment = target.partition("#")
        where = unquote(where.split("?", 1)[0])
        if where.startswith("/"):
            out.append((target, "absolute path: use a path relative to the document"))
            continue
        full = os.path.normpath(os.path.join(ROOT, os.path.dirname(path), where)) if where else os.path.join(ROOT, path)
        if os.path.relpath(full, ROOT).startswith(".."):
            out.append((target, "points outside the repository"))
        elif where and not os.path.exists(full):
            out.append((target, "no such file"))
        elif fragment and full.endswith(".md") and unquote(fragment).lower() not in anchors(
                text if not where else read(full)):
            out.append((target, "no such heading"))
    return out


def _read(full):
    with open(full, encoding="utf-8") as f:
        return f.read()


def test_every_relative_link_and_image_resolves_inside_the_repository():
    docs = tracked("*.md")
    assert "README.md" in docs
    bad = []
    for path in docs:
        with open(os.path.join(ROOT, path), encoding="utf-8") as f:
            bad += ["%s: %s (%s)" % (path, t, why) for t, why in broken_links(path, f.read())]
    assert not bad, "\n".join(bad)


def test_the_link_check_sees_what_it_must():
    text = ("See [start](README.md#quick-start), ![shot](docs/screenshots/none.png \"x\"), [up](../x.md),\n"
            "[web](https://example.com), `[code](nowhere.md)`, and\n[ref]: /etc/passwd\n"
            '<img src="docs/missing.png">\n```\n[fenced](nowhere.md)\n```\n')
    assert links(text) == ["README.md#quick-start", "docs/screenshots/none.png", "../x.md", "https://example.com",
                           "/etc/passwd", "docs/missing.png"]
    found = {t: why for t, why in broken_links("README.md", text)}
    assert found == {"docs/screenshots/none.png": "no such file", "../x.md": "points outside the repository",
                     "/etc/passwd": "absolute path: use a path relative to the document",
                     "docs/missing.png": "no such file"}
    assert broken_links("docs/X.md", "[readme](../README.md) [sim](SIMULATOR.md)") == []


def test_links_to_headings_are_checked_as_github_makes_them():
    page = "# Title\n## Stopping: Ctrl-C\n## The whole device in an ESP32's heap\n## Notes\n## Notes\n"
    assert anchors(page) == {"title", "stopping-ctrl-c", "the-whole-device-in-an-esp32s-heap", "notes", "notes-1"}
    text = page + "[a](#notes-1) [b](#stopping-ctrl-c) [c](#nowhere) [d](../README.md#quick-start) [e](../README.md#no)"
    assert broken_links("docs/X.md", text) == [("#nowhere", "no such heading"), ("../README.md#no", "no such heading")]


def test_nothing_in_the_repository_mentions_the_founders_folder():
    mentions = []
    for path in tracked():
        try:
            with open(os.path.join(ROOT, path), encoding="utf-8") as f:
                text = f.read()
        except (UnicodeDecodeError, IsADirectoryError):
            continue  # images
        for n, line in enumerate(text.splitlines(), 1):
            if OUTSIDE_FOLDER in line:
                mentions.append("%s:%d: %s" % (path, n, line.strip()))
    assert not mentions, "this folder does not exist in a clone:\n" + "\n".join(mentions)


def _readme():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        return f.read()


def test_the_readme_is_short_and_starts_with_the_two_commands():
    text = _readme()
    lines = text.splitlines()
    assert len(lines) <= README_MAX_LINES, "README.md has %d lines: move detail into docs/" % len(lines)
    head = "\n".join(lines[:30])
    assert "make sim" in head and "make test" in head, "the first lines must give `make sim` and `make test`"


def test_the_readme_map_links_every_document_in_docs():
    text = _readme()
    linked = {os.path.normpath(t.split("#", 1)[0]) for t in links(text)}
    docs = sorted(os.path.join("docs", n) for n in os.listdir(os.path.join(ROOT, "docs")) if n.endswith(".md"))
    assert docs, "docs/ has no documents"
    missing = [d for d in docs if d not in linked]
    assert not missing, "README.md's map does not link: " + ", ".join(missing)
