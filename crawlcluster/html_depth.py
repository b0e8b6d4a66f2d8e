"""A cheap pre-scan that caps how deep an HTML page nests before the parser builds its tree.

Why: lexbor (selectolax), like any HTML5 tree builder, looks through the stack of open
elements for each block-level start tag (is a ``<p>`` open in button scope?), so 100,000
nested ``<div>`` cost 100,000 x depth steps: 13 CPU-seconds for 1.1 MB, some 20 minutes for
10 MiB. Browsers bound the same cost by capping the tree: Blink makes an element past
depth 512 a sibling rather than a child. :func:`cap_nesting` does that to the text:
past ``max_depth`` open elements, a new start tag first closes the deepest one, and the
end tags left over are dropped. Text, links and attributes stay; only the depth changes.

The scan is a regular expression over the tags (comments and raw-text elements such as
``<script>`` skipped whole), counting what opens and closes; a page with fewer tags than
the limit is returned at once, and a page within the limit is returned unchanged.
"""

from __future__ import annotations

import re

__all__ = ["cap_nesting"]

_TOKEN = re.compile(
    r"<!--.*?(?:-->|\Z)"  # a comment, skipped whole
    r"|<(script|style|textarea|title|xmp|iframe|noembed|noframes)\b[^>]*>.*?(?:</\1\s*>|\Z)"  # raw text
    r"|<(/?)([A-Za-z][^\s/>]*)[^>]*?(/?)>",
    re.DOTALL | re.IGNORECASE)
# elements that never hold children
_VOID = frozenset("area base br col embed hr img input keygen link meta param source track wbr".split())
# elements the parser closes by itself (an unclosed <li> or <p> is common and nests nothing),
# and the document's own: not counted either way
_UNCOUNTED = frozenset("p li dt dd option optgroup tr td th thead tbody tfoot colgroup caption rb rt rp "
                       "html head body".split())
_FOREIGN = frozenset(("svg", "math"))


def cap_nesting(html: str, max_depth: int) -> tuple[str, int]:
    """``html`` with no element nested deeper than ``max_depth``, and how many start tags had
    to become siblings (0: ``html`` itself is returned)."""
    if html.count("<") <= max_depth:
        return html, 0
    if not _deeper_than(html, max_depth):
        return html, 0
    return _flatten(html, max_depth)


def _opens(closing: str, name: str, self_closing: str, foreign: int) -> bool:
    return not closing and name not in _VOID and not (self_closing and foreign)


def _deeper_than(html: str, max_depth: int) -> bool:
    depth = foreign = 0
    for match in _TOKEN.finditer(html):
        name = match.group(3)
        if name is None:
            continue
        name = name.lower()
        if name in _UNCOUNTED or name in _VOID:
            continue
        if match.group(2):
            depth = max(0, depth - 1)
            foreign -= name in _FOREIGN and foreign > 0
        elif _opens("", name, match.group(4), foreign):
            depth += 1
            foreign += name in _FOREIGN
            if depth > max_depth:
                return True
    return False


def _flatten(html: str, max_depth: int) -> tuple[str, int]:
    pieces: list[str] = []
    stack: list[tuple[str, bool]] = []  # (name, pushed as a sibling at the cap)
    surplus = 0  # end tags still to come for elements closed early
    flattened = foreign = 0
    position = 0
    for match in _TOKEN.finditer(html):
        name = match.group(3)
        if name is None:
            continue
        name = name.lower()
        if name in _UNCOUNTED or name in _VOID:
            continue
        if match.group(2):  # an end tag
            if stack and stack[-1][1]:
                stack.pop()
            elif surplus:
                pieces.append(html[position:match.start()])  # dropped: its element was closed early
                position = match.end()
                surplus -= 1
                continue
            elif stack:
                stack.pop()
            foreign -= name in _FOREIGN and foreign > 0
            continue
        if not _opens("", name, match.group(4), foreign):
            continue
        at_cap = len(stack) >= max_depth
        if at_cap:  # the deepest open element ends here; this one becomes its sibling
            closed, _ = stack.pop()
            pieces.append(html[position:match.start()])
            pieces.append(f"</{closed}>")
            position = match.start()
            surplus += 1
            flattened += 1
        stack.append((name, at_cap))
        foreign += name in _FOREIGN
    pieces.append(html[position:])
    return "".join(pieces), flattened
