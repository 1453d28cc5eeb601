"""``pacore view PATH --export FILE.html``: the same view as one self-contained file.

Contract: the file holds the page, its style, the vendored graph library, the viewer's script
and ALL the data the view can show (every run of a study or trace dir), so it works from
``file://`` with no network and no server. Data sits in a ``<script type="application/json">``
block with ``<``, ``>``, ``&`` and U+2028/9 written as ``\\u003c`` etc. (no text can close the
block or open a comment), parsed by the script with ``JSON.parse``, never evaluated. A strict
Content-Security-Policy in a ``<meta>`` allows exactly the inline scripts and style it holds
(by SHA-256) and nothing else: no network (``connect-src`` unset), no other script, no plugin.
The file is written atomically (a temp file renamed), so a failed export leaves no half file.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from pacore_agents._errors import ConfigError

from ._app import STATIC
from ._source import ViewSource

_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def embed_json(data: Any) -> str:
    """``data`` as JSON safe inside an HTML ``<script>`` element (see the module)."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return "".join(_ESCAPES.get(ch, ch) for ch in text) if any(c in text for c in _ESCAPES) else text


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode() + "'"


def _inline_script(text: str) -> str:
    if "</script" in text.lower() or "<!--" in text:
        raise ConfigError("a viewer asset holds '</script' or '<!--': it cannot be inlined")  # our own files
    return text


def render_html(bundle: dict[str, Any], title: str) -> str:
    """The exported page for ``bundle`` (``ViewSource.bundle()``)."""
    css = (STATIC / "viewer.css").read_text(encoding="utf-8")
    scripts = [_inline_script((STATIC / name).read_text(encoding="utf-8"))
               for name in ("vendor/cytoscape.min.js", "viewer.js")]
    csp = ("default-src 'none'; script-src " + " ".join(_sha256(s) for s in scripts) + "; style-src "
           + _sha256(css) + "; img-src data:; base-uri 'none'; form-action 'none'")
    head = (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">\n'
            f'<meta http-equiv="Content-Security-Policy" content="{csp}">\n'
            f'<meta name="referrer" content="no-referrer">\n'
            f"<title>pacore view: {_html_text(title)}</title>\n"
            f'<style id="__________cytoscape_stylesheet">{css}</style></head>\n')
    body = ('<body><div id="app"></div>\n'
            f'<script type="application/json" id="pacore-data">{embed_json(bundle)}</script>\n'
            + "".join(f"<script>{s}</script>\n" for s in scripts) + "</body></html>\n")
    return head + body


def _html_text(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def export_html(source: ViewSource, path: str | Path) -> Path:
    """Write the view of ``source`` to ``path`` (see the module); returns the path."""
    out = Path(path)
    if out.suffix.lower() not in (".html", ".htm"):
        raise ConfigError(f"--export {out}: the file name must end in .html")
    text = render_html(source.bundle(), source.path.name)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(out)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ConfigError(f"cannot write {out}: {exc.strerror or exc}") from exc
    return out
