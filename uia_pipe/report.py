"""The report as text: one list of blocks rendered to Markdown (figures by
relative path) and to a self-contained HTML page (figures inlined as base64
PNG). Pure: the evaluate stage reads the inputs and writes the strings."""

from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass, field

@dataclass
class Report:
    """Blocks: ("h1"|"h2"|"p"|"li", text), ("table", header, rows), ("figure", name, caption)."""

    title: str
    blocks: list[tuple] = field(default_factory=list)

    def heading(self, text: str, level: int = 2) -> None:
        self.blocks.append((f"h{level}", text))

    def para(self, text: str) -> None:
        self.blocks.append(("p", text))

    def bullets(self, items: list[str]) -> None:
        self.blocks.extend(("li", item) for item in items)

    def table(self, header: list[str], rows: list[list]) -> None:
        self.blocks.append(("table", header, rows))

    def figure(self, name: str, caption: str) -> None:
        self.blocks.append(("figure", name, caption))

    def figures(self) -> list[str]:
        return [b[1] for b in self.blocks if b[0] == "figure"]


def cell(value) -> str:
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def interval(low, high) -> str:
    """[low, high] with the table's digits."""
    return f"[{cell(float(low))}, {cell(float(high))}]"


def markdown_table(header: list[str], rows: list[list]) -> str:
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
                      *("| " + " | ".join(cell(v) for v in row) + " |" for row in rows)])


def markdown(report: Report) -> str:
    """Markdown with figures referenced by their (relative) names."""
    out = [f"# {report.title}", ""]
    previous = None
    for block in report.blocks:
        kind = block[0]
        if previous == "li" and kind != "li":
            out.append("")
        if kind in ("h1", "h2", "h3"):
            out += ["#" * int(kind[1]) + " " + block[1], ""]
        elif kind == "p":
            out += [block[1], ""]
        elif kind == "li":
            out.append(f"- {block[1]}")
        elif kind == "table":
            out += [markdown_table(block[1], block[2]), ""]
        elif kind == "figure":
            out += [f"![{block[2]}]({block[1]})", "", f"*{block[2]}*", ""]
        previous = kind
    return "\n".join(out).rstrip() + "\n"


def to_html(report: Report, images: dict[str, bytes]) -> str:
    """One HTML page with every figure inlined; `images` maps a figure's name to its PNG bytes."""
    e = html.escape
    parts = [
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">', f"<title>{e(report.title)}</title>",
        "<style>body{font-family:sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;line-height:1.45}"
        "table{border-collapse:collapse;margin:1rem 0}td,th{border:1px solid #bbb;padding:.2rem .5rem;"
        "text-align:right}th{background:#eee}img{max-width:100%}figcaption{font-style:italic}</style>",
        "</head>", "<body>", f"<h1>{e(report.title)}</h1>",
    ]
    in_list = False
    for block in report.blocks:
        kind = block[0]
        if in_list and kind != "li":
            parts.append("</ul>")
            in_list = False
        if kind in ("h1", "h2", "h3"):
            parts.append(f"<{kind}>{e(block[1])}</{kind}>")
        elif kind == "p":
            parts.append(f"<p>{e(block[1])}</p>")
        elif kind == "li":
            if not in_list:
                parts.append("<ul>")
                in_list = True
            parts.append(f"<li>{e(block[1])}</li>")
        elif kind == "table":
            header, rows = block[1], block[2]
            parts.append("<table><thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr></thead><tbody>")
            parts += ["<tr>" + "".join(f"<td>{e(cell(v))}</td>" for v in row) + "</tr>" for row in rows]
            parts.append("</tbody></table>")
        elif kind == "figure":
            data = base64.b64encode(images[block[1]]).decode("ascii")
            parts.append(f'<figure><img alt="{e(block[2])}" src="data:image/png;base64,{data}">'
                         f"<figcaption>{e(block[2])}</figcaption></figure>")
    if in_list:
        parts.append("</ul>")
    parts += ["</body>", "</html>"]
    return "\n".join(parts) + "\n"
