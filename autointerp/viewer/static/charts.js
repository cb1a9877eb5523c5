// Draws every chart of the page: each is a Vega-Lite spec (written server-side with Altair) in a
// <script type="application/json"> element, drawn by vega-embed with Vega's expression
// interpreter, so the page's Content-Security-Policy needs no eval.
for (const el of document.querySelectorAll(".chart[data-spec]")) {
  const spec = JSON.parse(document.getElementById(el.dataset.spec).textContent);
  vegaEmbed(el, spec, { actions: false, ast: true, renderer: "svg" }).catch((error) => {
    el.textContent = "chart failed: " + error;
    el.classList.add("chart-error");
  });
}
