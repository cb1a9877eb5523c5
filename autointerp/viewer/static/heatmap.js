// Hovering a token of a heatmap shows its true activation and the simulated one, read from the
// numbers its container carries (data-act, data-sim), as the token's title.
document.addEventListener("mouseover", (event) => {
  const token = event.target;
  const box = token.parentElement;
  if (token.tagName !== "SPAN" || !box || !box.classList.contains("tokens") || token.title) return;
  const i = Array.prototype.indexOf.call(box.children, token);
  const act = (box.dataset.act || "").split(",")[i];
  const sim = box.dataset.sim ? box.dataset.sim.split(",")[i] : "";
  let title = "activation " + act;
  if (sim) title += " · simulated " + sim + "/10";
  if (token.classList.contains("m")) title += " · the simulator gave no value";
  token.title = title;
});
