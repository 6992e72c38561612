"""``index.html`` of the tour: one self-contained page (inline style, no scripts, no network).

Figures are referenced by file name (they sit beside ``index.html`` in the output folder).
"""

from __future__ import annotations

import datetime
import html
import math
import re

import numpy as np

__all__ = ["render_html"]

_STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; max-width: 68rem;
       margin: 2rem auto; padding: 0 1rem; color: #222; line-height: 1.5; }
h1 { margin-bottom: 0.2rem; } h2 { border-bottom: 2px solid #ddd; padding-bottom: 0.2rem;
margin-top: 2.5rem; } h3 { margin-bottom: 0.3rem; color: #444; }
.meta { color: #666; font-size: 0.9rem; } .desc { color: #555; font-style: italic; }
table { border-collapse: collapse; margin: 0.6rem 0 1rem; font-size: 0.88rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.6rem; text-align: left;
         vertical-align: top; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.pass td.status { color: #1a7f37; font-weight: bold; }
tr.fail td { background: #fde7e9; } tr.fail td.status { color: #c62828; font-weight: bold; }
figure { margin: 1rem 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.88rem; color: #555; }
code { background: #f5f5f5; padding: 0 0.2rem; border-radius: 3px; }
pre.code { background: #f7f7f7; padding: 0.6rem; overflow-x: auto; font-size: 0.8rem; }
pre.error { background: #fde7e9; padding: 0.6rem; overflow-x: auto; font-size: 0.8rem; }
.badge { display: inline-block; padding: 0 0.5rem; border-radius: 0.6rem; color: white;
         font-size: 0.8rem; font-weight: bold; }
.badge.pass { background: #1a7f37; } .badge.fail { background: #c62828; }
"""


def _esc(x):
    return html.escape(str(x), quote=True)


def _inline(text):
    """Escape, then `code` spans."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", _esc(text))


def _num(v):
    """A cell value as text: floats to 6 significant digits, lists shortened."""
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        v = float(v)
        if math.isnan(v) or math.isinf(v):
            return str(v)
        return f"{v:.6g}"
    if isinstance(v, np.ndarray):
        v = v.tolist()
    if isinstance(v, (list, tuple)):
        items = [_num(x) for x in v[:8]]
        return "[" + ", ".join(items) + (", …" if len(v) > 8 else "") + "]"
    return str(v)


def _cell(v):
    cls = ' class="num"' if isinstance(v, (int, float, np.number)) and not isinstance(
        v, (bool, np.bool_)) else ""
    return f"<td{cls}>{_esc(_num(v))}</td>"


def _flatten(d, prefix=""):
    """``(dotted name, value)`` for every leaf of a nested metrics dict."""
    for k, v in d.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            yield from _flatten(v, name + ".")
        else:
            yield name, v


def _anchor(name):
    return "sec-" + re.sub(r"[^a-z0-9-]", "-", name.lower())


def _section_html(r):
    sec, ctx = r.section, r.context
    n_ok = sum(c.ok for c in ctx.checks)
    badge = "pass" if r.ok else "fail"
    out = [f'<section id="{_anchor(sec.name)}">',
           f"<h2>§{_esc(sec.chapter)} · {_esc(sec.title)} "
           f'<span class="badge {badge}">{n_ok}/{len(ctx.checks)} checks</span></h2>',
           f'<p class="desc">{_inline(sec.description)} '
           f"(<code>calcml tour --section {_esc(sec.name)}</code>, {r.runtime_s:.2f} s)</p>"]
    for block in ctx.blocks:
        kind = block[0]
        if kind == "text":
            out.append(f"<p>{_inline(block[1])}</p>")
        elif kind == "figure":
            _, filename, caption = block
            out.append(f'<figure><img src="{_esc(filename)}" alt="{_esc(caption or filename)}">'
                       f"<figcaption>{_inline(caption)}</figcaption></figure>")
        elif kind == "code":
            _, caption, text = block
            if caption:
                out.append(f"<h3>{_inline(caption)}</h3>")
            out.append(f'<pre class="code">{_esc(text)}</pre>')
        elif kind == "table":
            _, caption, headers, rows = block
            if caption:
                out.append(f"<h3>{_inline(caption)}</h3>")
            out.append("<table><tr>" + "".join(f"<th>{_esc(h)}</th>" for h in headers)
                       + "</tr>")
            out.extend("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in rows)
            out.append("</table>")
    if r.error:
        out.append("<h3>Error</h3>")
        out.append(f'<pre class="error">{_esc(r.error)}</pre>')
    if ctx.metrics:
        out.append("<h3>Metrics</h3><table><tr><th>metric</th><th>value</th></tr>")
        out.extend(f"<tr><td><code>{_esc(k)}</code></td>{_cell(v)}</tr>"
                   for k, v in _flatten(ctx.metrics))
        out.append("</table>")
    out.append("<h3>Checks: theory against measurement</h3><table><tr><th>check</th>"
               "<th>expected</th><th>measured</th><th>rule</th><th></th></tr>")
    for c in ctx.checks:
        cls = "pass" if c.ok else "fail"
        out.append(f'<tr class="{cls}"><td>{_esc(c.name)}</td>{_cell(c.expected)}'
                   f"{_cell(c.measured)}<td>{_esc(c.rule)}</td>"
                   f'<td class="status">{"pass" if c.ok else "FAIL"}</td></tr>')
    out.append("</table></section>")
    return "\n".join(out)


def render_html(result):
    """The tour's report page for a :class:`~calcml.tour.runner.TourResult`."""
    from .. import __version__

    n_checks = sum(len(r.checks) for r in result.sections)
    n_fail = len(result.failed_checks)
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    mode = "quick" if result.quick else "full"
    rows = []
    for r in result.sections:
        n_ok = sum(c.ok for c in r.checks)
        cls = "pass" if r.ok else "fail"
        rows.append(f'<tr class="{cls}"><td>§{_esc(r.section.chapter)}</td>'
                    f'<td><a href="#{_anchor(r.section.name)}">{_esc(r.section.title)}</a></td>'
                    f"<td><code>{_esc(r.section.name)}</code></td>"
                    f'<td class="num">{n_ok}/{len(r.checks)}</td>'
                    f'<td class="num">{r.runtime_s:.2f} s</td>'
                    f'<td class="status">{"pass" if r.ok else "FAIL"}</td></tr>')
    verdict = ("every check passed" if n_fail == 0 else
               f"{n_fail} check{'s' if n_fail != 1 else ''} FAILED")
    head = (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>calcml tour</title><style>{_STYLE}</style></head><body>"
            f"<h1>calcml tour</h1>"
            f'<p class="meta">Calculus in Machine Learning, run as experiments · calcml '
            f"{_esc(__version__)} · {mode} run · {stamp} · {result.runtime_s:.1f} s · "
            f"{n_checks} checks, {verdict}</p>"
            "<table><tr><th>chapter</th><th>section</th><th>name</th><th>checks</th>"
            "<th>time</th><th></th></tr>" + "\n".join(rows) + "</table>")
    body = "\n".join(_section_html(r) for r in result.sections)
    return head + "\n" + body + "\n</body></html>\n"
