"""The page at `/`: a query box and an image upload; results as a grid of thumbnails with scores and
captions, each linking to its original. Plain HTML and a few lines of JavaScript, no external assets
(it works offline); results are put in the page with textContent, never as HTML."""

from __future__ import annotations

import html

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>clip search: {name}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 body {{ font-family: system-ui, sans-serif; margin: 1.5rem; color: #222; }}
 form {{ display: flex; gap: .5rem; flex-wrap: wrap; align-items: center; }}
 #query {{ flex: 1; min-width: 16rem; font-size: 1.1rem; padding: .4rem; }}
 #results {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(180px, 1fr)); gap: 1rem; margin-top: 1rem; }}
 figure {{ margin: 0; border: 1px solid #ddd; border-radius: 6px; padding: .4rem; }}
 figure img {{ width: 100%; height: 160px; object-fit: cover; display: block; }}
 figcaption {{ font-size: .85rem; overflow-wrap: anywhere; }} .score {{ color: #666; }}
 #status {{ color: #666; margin-top: .5rem; }}
</style></head>
<body>
<h1>clip search</h1>
<p>{count} {kind} embeddings in <code>{name}</code>. API: <a href="/docs">/docs</a></p>
<form id="form">
 <input id="query" name="text" type="search" placeholder="describe what to find" autocomplete="off" {disabled}>
 <input id="upload" name="file" type="file" accept="image/*" {disabled}>
 <label>k <input id="k" type="number" min="1" max="200" value="12" style="width:4rem"></label>
 <label><input id="dedup" type="checkbox"> dedup</label>
 <button id="go" type="submit" {disabled}>Search</button>
</form>
<div id="status">{status}</div>
<div id="results"></div>
<script>
const form = document.getElementById("form"), results = document.getElementById("results"), status = document.getElementById("status");
function show(data) {{
  results.replaceChildren();
  for (const hit of data.results) {{
    const fig = document.createElement("figure"); fig.className = "result";
    const link = document.createElement("a"); link.href = hit.url || hit.image_url || "#"; link.target = "_blank";
    if (hit.image_url) {{ const img = document.createElement("img"); img.src = hit.image_url; img.alt = hit.caption; img.loading = "lazy"; link.append(img); }}
    else {{ link.textContent = hit.source; }}
    const cap = document.createElement("figcaption");
    const score = document.createElement("span"); score.className = "score"; score.textContent = hit.score.toFixed(4) + " ";
    cap.append(score, document.createTextNode(hit.caption));
    fig.append(link, cap); results.append(fig);
  }}
  status.textContent = data.results.length + " results in " + data.took_ms + " ms";
}}
form.addEventListener("submit", async (event) => {{
  event.preventDefault();
  const k = parseInt(document.getElementById("k").value || "12"), dedup = document.getElementById("dedup").checked;
  const file = document.getElementById("upload").files[0], text = document.getElementById("query").value.trim();
  let response;
  status.textContent = "searching...";
  if (file) {{
    const body = new FormData(); body.append("file", file); body.append("k", k); body.append("dedup", dedup);
    response = await fetch("/search/image", {{method: "POST", body}});
  }} else if (text) {{
    response = await fetch("/search", {{method: "POST", headers: {{"content-type": "application/json"}}, body: JSON.stringify({{text, k, dedup}})}});
  }} else {{ status.textContent = "type a query or choose an image"; return; }}
  const data = await response.json();
  if (!response.ok) {{ results.replaceChildren(); status.textContent = "error: " + data.error; return; }}
  show(data);
}});
</script>
</body></html>
"""


def render_page(name: str, count: int, kind: str, has_model: bool) -> str:
    return _PAGE.format(
        name=html.escape(name),
        count=count,
        kind=html.escape(str(kind)),
        disabled="" if has_model else "disabled",
        status="" if has_model else "no model loaded: this server answers vector queries only (see /docs)",
    )
