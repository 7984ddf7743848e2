// The command table of greenchat/commands.py (from /texts.json), and the
// same reading of a typed line: lookup, parse_line, hint. The server parses
// every line it gets itself; the page parses only to answer `help` and the
// private commands, to name the user of a stored message, and for hints.

import { commandTable, fill, text } from "./texts.js";

// Python's str.isspace(), which commands.py splits words on.
const SPACE = "\\t\\n\\x0b\\x0c\\r\\x1c-\\x1f \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000";
const WORD = new RegExp(`[${SPACE}]*([^${SPACE}]+)`, "y");
const IS_SPACE = new RegExp(`[${SPACE}]`);
const ALL_SPACE = new RegExp(`^[${SPACE}]*$`);
const LEADING_SPACE = new RegExp(`^[${SPACE}]+`);
const SURROGATE = /[\ud800-\udfff]/u;      // with the u flag: lone halves only
const DIGITS = /^[0-9]{1,10}$/;

export class InvalidCommand extends Error {}

export function isBlank(line) {
  return ALL_SPACE.test(line);
}

/** The command `word` names (a name or an alias, with or without a leading
 * `/`), or null. */
export function lookup(word) {
  const name = word.startsWith("/") ? word.slice(1) : word;
  for (const spec of commandTable()) {
    if (spec.name === name || (Array.isArray(spec.aliases) && spec.aliases.includes(name))) {
      return spec;
    }
  }
  return null;
}

/** The spec a command's own name (no alias, no slash) names, as Tab completes. */
export function byName(name) {
  return commandTable().find((spec) => spec.name === name) || null;
}

export function firstWord(line) {
  WORD.lastIndex = 0;
  const m = WORD.exec(line);
  return m ? m[1] : "";
}

/** A word of help for a line the server refused. */
export function hint(line) {
  const word = firstWord(line);
  const spec = lookup(word);
  if (spec) return fill("usage_hint", { syntax: spec.syntax });
  if (lookup(word.toLowerCase())) return text("LOWER_CASE_HINT");
  return text("NOT_A_COMMAND_HINT");
}

/** [spec, args] of a typed line, as commands.parse_line; throws InvalidCommand. */
export function parseLine(line) {
  if (SURROGATE.test(line)) throw new InvalidCommand();
  line = line.replace(/[\r\n]+$/, "");
  WORD.lastIndex = 0;
  let m = WORD.exec(line);
  const spec = m ? lookup(m[1]) : null;
  if (!spec) throw new InvalidCommand();
  let pos = WORD.lastIndex;
  const args = [];
  for (const kind of spec.args || []) {
    if (kind === "text") {
      let rest = line.slice(pos);
      rest = IS_SPACE.test(rest.charAt(0)) ? rest.replace(LEADING_SPACE, "") : "";
      if (isBlank(rest)) throw new InvalidCommand();
      args.push(rest);
      pos = line.length;
      break;
    }
    WORD.lastIndex = pos;
    m = WORD.exec(line);
    if (!m) {
      if (kind.endsWith("?")) {
        args.push(null);
        continue;
      }
      throw new InvalidCommand();
    }
    const word = m[1];
    pos = WORD.lastIndex;
    if (kind === "n?" || kind === "seconds") {
      if (!DIGITS.test(word) || (kind === "n?" && Number(word) === 0)) throw new InvalidCommand();
      args.push(Number(word));
    } else {
      args.push(word);
    }
  }
  if (!isBlank(line.slice(pos))) throw new InvalidCommand();
  return [spec, args];
}

/** `help`, as the terminal client's cmd_help: syntax padded, then summary. */
export function helpLines() {
  const table = commandTable();
  const width = Math.max(0, ...table.map((spec) => spec.syntax.length));
  return table.map((spec) => `${spec.syntax.padEnd(width)}  ${spec.summary}`);
}

/** What Tab offers for the word after `words` (lineedit.Completer). */
export function candidates(words, seen, me) {
  if (words.length === 0) return commandTable().map((spec) => spec.name);
  const spec = byName(words[0]);
  const args = spec ? spec.args || [] : [];
  if (spec && words.length <= args.length && args[words.length - 1] === "user") {
    return [...seen].filter((name) => name !== me);
  }
  return [];
}

/** A name Tab may offer: printable and one word (lineedit._completable). */
export function completable(name) {
  return typeof name === "string" && name.length > 0 && !/[\p{C}\p{Z}]/u.test(name);
}
