// Every text the page shows comes from the server's /texts.json, made from
// greenchat/texts.py and greenchat/commands.py: texts, templates (with
// {param} placeholders) and the command table. Nothing here spells a text.

const data = { texts: {}, templates: {}, commands: [], version: "" };

export async function loadTexts() {
  const answer = await fetch("texts.json", { cache: "no-cache" });
  if (!answer.ok) throw new Error(`texts.json: HTTP ${answer.status}`);
  const json = await answer.json();
  data.texts = json.texts || {};
  data.templates = json.templates || {};
  data.commands = Array.isArray(json.commands) ? json.commands : [];
  data.version = typeof json.version === "string" ? json.version : "";
}

/** texts.py's constant `name`. */
export function text(name) {
  const value = data.texts[name];
  return typeof value === "string" ? value : name;
}

export function version() {
  return data.version;
}

export function commandTable() {
  return data.commands;
}

/** The pieces of template `name`: strings for its own words, {param} for a
 * placeholder, so a caller can give each argument an element of its own. */
export function pieces(name) {
  const template = data.templates[name];
  if (typeof template !== "string") return [{ param: "text" }];
  const out = [];
  const re = /\{(\w+)\}/g;
  let at = 0;
  let m;
  while ((m = re.exec(template)) !== null) {
    if (m.index > at) out.push(template.slice(at, m.index));
    out.push({ param: m[1] });
    at = re.lastIndex;
  }
  if (at < template.length) out.push(template.slice(at));
  return out;
}

/** Template `name` filled in with `params` (one pass: an argument holding
 * "{text}" stays as it is). */
export function fill(name, params) {
  return pieces(name)
    .map((piece) => (typeof piece === "string" ? piece
      : piece.param in params ? String(params[piece.param]) : `{${piece.param}}`))
    .join("");
}
