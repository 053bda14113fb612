"""Offline HTML with the crystal viewer: ``crystalforge view`` pages and notebook output.

The page and the notebook cell carry 3Dmol.js (vendored), the viewer script and the
data inline, so they open with no server and no internet. Structure data travel as JSON
in a ``<script type="application/json">`` element whose ``<`` are escaped, and the script
puts every text into the page with ``textContent``: no CIF text is ever parsed as HTML.
"""

from __future__ import annotations

import html
import json
import threading
import uuid
from pathlib import Path
from typing import Any, Sequence

STATIC = Path(__file__).parent / "static"
VIEWER_VERSION = "3Dmol.js 2.5.5"
_sent_lock = threading.Lock()
_script_sent = False


def _asset(name: str) -> str:
    return (STATIC / name).read_text(encoding="utf-8")


def _json_for_script(data: Any) -> str:
    """Return JSON safe inside a ``<script>`` element (no ``</script>`` or ``<!--`` can close it)."""
    text = json.dumps(data, default=str)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _libraries() -> str:
    return (f"<script>{_asset('vendor/3dmol/3Dmol-min.js')}</script>\n"
            f"<script>{_asset('viewer.js')}</script>\n")


_BOOT = """
(function () {
  function start() {
    var data = JSON.parse(document.getElementById(%(data_id)s).textContent);
    var root = document.getElementById(%(root_id)s);
    data.forEach(function (item) {
      var card = document.createElement("div");
      card.className = "cf-card";
      var head = document.createElement("h3");
      head.textContent = item.name + (item.formula_found ? " \\u2014 " + item.formula_found : "") +
        (item.density ? " \\u00b7 " + item.density.toFixed(3) + " g/cm\\u00b3" : "");
      card.appendChild(head);
      var holder = document.createElement("div");
      card.appendChild(holder);
      root.appendChild(card);
      new CrystalViewer(holder).show(item);
      card.appendChild(CrystalViewer.checksTable(item));
    });
  }
  if (window.CrystalViewer && window.$3Dmol) start();
  else { var tries = 0; var timer = setInterval(function () {
    if (window.CrystalViewer && window.$3Dmol) { clearInterval(timer); start(); }
    else if (++tries > 200) clearInterval(timer); }, 50); }
})();
"""

_CARD_CSS = """
.cf-cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(420px, 1fr)); gap: 12px; }
.cf-card h3 { font: 600 14px system-ui, sans-serif; margin: 4px 0; }
"""


def _fragment(items: Sequence[dict[str, Any]]) -> str:
    root_id = f"cf-{uuid.uuid4().hex[:12]}"
    data_id = f"{root_id}-data"
    return (f'<div id="{root_id}" class="cf-cards"></div>\n'
            f'<script type="application/json" id="{data_id}">{_json_for_script(list(items))}</script>\n'
            f"<script>{_BOOT % {'data_id': json.dumps(data_id), 'root_id': json.dumps(root_id)}}</script>\n")


def standalone_page(items: Sequence[dict[str, Any]], title: str = "crystalforge structures") -> str:
    """Return a complete offline HTML page showing each item (see :func:`crystalforge.web.jobs.view_items`)."""
    return (
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{html.escape(title)}</title>\n"
        f"<!-- viewer: {VIEWER_VERSION} (BSD-3-Clause), inlined -->\n"
        f"<style>{_asset('viewer.css')}{_CARD_CSS}body{{padding:12px;font-family:system-ui,sans-serif}}</style>\n"
        f"{_libraries()}</head>\n<body>\n<h1 style=\"font-size:18px\">{html.escape(title)}</h1>\n"
        f"{_fragment(items)}</body>\n</html>\n"
    )


def notebook_html(item: dict[str, Any]) -> str:
    """Return a notebook cell's HTML for one item; 3Dmol.js and the styles are inlined once per kernel."""
    global _script_sent
    with _sent_lock:
        first = not _script_sent
        _script_sent = True
    head = f"<style>{_asset('viewer.css')}{_CARD_CSS}</style>\n{_libraries()}" if first else ""
    return head + _fragment([item])
