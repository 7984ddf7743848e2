// What the page shows, as greenchat/client/console.py shows it on a
// terminal: every line escaped (`visible`), a local time stamp, marks for
// broadcasts and stored messages, a day line when the date changes, dim
// hints, a class for each kind of line. Text from the network only ever
// becomes text nodes: nothing here parses HTML.

const WEEKDAYS = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"];
const MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August",
  "September", "October", "November", "December"];
// The oldest lines go past this many: a tab left open for weeks stays light.
const MAX_LINES = 5000;
// ...or past this many characters in all: so does one flooded with long
// messages (5,000 of 64 KB would be 320 MB of page).
const MAX_CHARS = 2000000;

// console.visible: C0 controls but TAB in caret notation (LF starts an
// indented continuation line), DEL as ^?, C1 as \x9b, the bidi overrides and
// isolates and U+2028/U+2029 as <U+202E>.
const CONTROLS = /[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;

export function visible(value) {
  return String(value).replace(CONTROLS, (ch) => {
    const code = ch.charCodeAt(0);
    if (code === 0x0a) return "\n  ";
    if (code < 0x20) return "^" + String.fromCharCode(code + 0x40);
    if (code === 0x7f) return "^?";
    if (code < 0xa0) return "\\x" + code.toString(16).padStart(2, "0");
    return "<U+" + code.toString(16).toUpperCase().padStart(4, "0") + ">";
  });
}

const two = (n) => String(n).padStart(2, "0");

/** "HH:MM" of a Date, local time. */
export function clock(date) {
  return `${two(date.getHours())}:${two(date.getMinutes())}`;
}

/** "YYYY-MM-DD HH:MM", local time, as a `history` line's stamp. */
export function fullStamp(date) {
  return `${date.getFullYear()}-${two(date.getMonth() + 1)}-${two(date.getDate())} ${clock(date)}`;
}

/** texts.day_line: `--- Tuesday 1 December ---`, in English whatever the locale. */
export function dayLine(date) {
  return `--- ${WEEKDAYS[date.getDay()]} ${date.getDate()} ${MONTHS[date.getMonth()]} ---`;
}

function dayOf(date) {
  return `${date.getFullYear()}-${date.getMonth()}-${date.getDate()}`;
}

function element(tag, className, content) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (content !== undefined) node.textContent = content;
  return node;
}

export class Conversation {
  constructor(node) {
    this.node = node;
    this.day = null;        // the date of the last line shown
    this.sizes = [];        // the characters of each line in the pane, oldest first
    this.chars = 0;
  }

  /** One line. `content` is a string or a list of pieces: strings, or
   * {text, cls} for a part with a class of its own (span.text, span.sender).
   * `style` names its kind (lines starting "Error." are errors); `at` is the
   * Unix time to stamp it with (now if absent); `prefix` a mark before it,
   * `mark` a dim one after it. */
  show(content, { style = null, at = null, prefix = null, mark = null } = {}) {
    const parts = (Array.isArray(content) ? content : [content])
      .map((piece) => (typeof piece === "string" ? { text: visible(piece), cls: null }
        : { text: visible(piece.text), cls: piece.cls }));
    if (!style && parts.map((part) => part.text).join("").startsWith("Error.")) style = "error";
    let date = at === null ? new Date() : new Date(at * 1000);
    if (Number.isNaN(date.getTime())) date = new Date();
    const day = dayOf(date);
    if (day !== this.day && (this.day !== null || day !== dayOf(new Date()))) {
      this._append(element("div", "line day", dayLine(date)));
    }
    this.day = day;
    const line = element("div", style ? `line ${style}` : "line");
    line.append(element("span", "clock", `[${clock(date)}] `));
    if (prefix !== null) line.append(element("span", "mark all", visible(prefix)), " ");
    for (const part of parts) {
      line.append(part.cls ? element("span", part.cls, part.text) : document.createTextNode(part.text));
    }
    if (mark !== null) line.append(" ", element("span", "mark offline", visible(mark)));
    this._append(line);
    return line;
  }

  /** A word of help from the page itself, dim. */
  hint(content) {
    return this.show(content, { style: "hint" });
  }

  /** The line typed, as a terminal leaves it above the prompt (no stamp). */
  echo(prompt, typed) {
    this._append(element("div", "echo", prompt + visible(typed)));
  }

  /** A half-typed line kept after an idle logout, plain, to be copied. */
  keep(typed) {
    this._append(element("div", "kept", visible(typed)));
  }

  _append(node) {
    const box = this.node;
    const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 48;
    box.append(node);
    const size = node.textContent.length;
    this.sizes.push(size);
    this.chars += size;
    while (box.childElementCount > MAX_LINES ||
           (this.chars > MAX_CHARS && box.childElementCount > 1)) {
      box.firstElementChild.remove();
      this.chars -= this.sizes.shift();
    }
    if (atBottom) box.scrollTop = box.scrollHeight;
  }
}

/** The online list: one button per other user online; a click picks. */
export class Roster {
  constructor(list, counter, onPick) {
    this.list = list;
    this.counter = counter;
    this.onPick = onPick;
    this.names = new Set();
  }

  set(names) {
    this.names = new Set(names);
    this._render();
  }

  add(name) {
    if (!this.names.has(name)) {
      this.names.add(name);
      this._render();
    }
  }

  remove(name) {
    if (this.names.delete(name)) this._render();
  }

  clear() {
    this.set([]);
  }

  _render() {
    const items = [...this.names].sort().map((name) => {
      const item = document.createElement("li");
      const button = element("button", null, visible(name));
      button.type = "button";
      button.addEventListener("click", () => this.onPick(name));
      item.append(button);
      return item;
    });
    this.list.replaceChildren(...items);
    if (this.counter) this.counter.textContent = String(this.names.size);
  }
}

/** Lines in the login form's alert: [{text, hint, error}]; a refusal
 * (`error`) or a line starting "Error." shows as an error. */
export function showAlert(node, lines) {
  node.replaceChildren(...lines.map(({ text, hint, error }) => {
    const shown = visible(text);
    return element("p", hint ? "hint" : error || shown.startsWith("Error.") ? "error" : null, shown);
  }));
}
