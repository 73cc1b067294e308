// Minimal offline renderer of /openapi.json: one card per operation (no Swagger UI, no CDN).
"use strict";

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (cls) node.className = cls;
  return node;
}

function schemaRows(schema) {
  const dl = el("dl", undefined, "facts");
  const required = new Set(schema.required || []);
  for (const [name, prop] of Object.entries(schema.properties || {})) {
    const range = prop.minimum !== undefined ? ` ${prop.minimum}–${prop.maximum}` : "";
    dl.append(el("dt", name + (required.has(name) ? " *" : "")),
              el("dd", `${prop.format || prop.type}${range}${prop.description ? " — " + prop.description : ""}`));
  }
  return dl;
}

async function main() {
  const root = document.getElementById("api");
  const spec = await (await fetch("/openapi.json")).json();
  root.replaceChildren();
  const intro = el("p", spec.info.description || "");
  intro.prepend(el("b", `${spec.info.title} ${spec.info.version}. `));
  root.append(intro);
  for (const [path, ops] of Object.entries(spec.paths)) {
    for (const [method, op] of Object.entries(ops)) {
      const card = el("section", undefined, "card");
      card.append(el("h2", `${method.toUpperCase()} ${path}`), el("p", op.summary || "", "muted"));
      const body = op.requestBody && op.requestBody.content;
      if (body) {
        for (const [type, media] of Object.entries(body)) {
          card.append(el("p", "Body: " + type + " (* required)"));
          if (media.schema) card.append(schemaRows(media.schema));
        }
      }
      const responses = el("dl", undefined, "facts");
      for (const [code, r] of Object.entries(op.responses || {})) responses.append(el("dt", code), el("dd", r.description));
      card.append(el("p", "Responses:"), responses);
      root.append(card);
    }
  }
}

document.addEventListener("DOMContentLoaded", () => {
  main().catch((err) => { document.getElementById("api").textContent = "Could not load /openapi.json: " + err; });
});
