// The page: the login form, the chat view and the input line, wired to a
// Session (session.js). The input line behaves as the terminal client's:
// Enter sends, Up/Down walk the lines typed on this page, Tab completes
// command names and then user names (twice: lists the choices).

import { isBlank } from "./commands.js";
import { Login, Session } from "./session.js";
import { loadTexts, text } from "./texts.js";
import { Conversation, Roster, showAlert, visible } from "./view.js";

const $ = (id) => document.getElementById(id);
const HISTORY_LIMIT = 1000;
// The connection's state in the header, by its name in texts.py.
const STATES = { connected: "WEB_CONNECTED", reconnecting: "WEB_RECONNECTING", off: "WEB_SIGNED_OUT" };

const form = $("login");
const username = $("username");
const password = $("password");
const alertBox = $("alert");
const enter = $("enter");
const chat = $("chat");
const composer = $("composer");
const input = $("message");
const people = $("people");
const leave = $("leave");

const conversation = new Conversation($("log"));
const roster = new Roster($("online"), $("online-count"), pick);
const say = (lines) => showAlert(alertBox, lines);
const login = new Login(say);
let session = null;

const ui = {
  show: (content, opts) => conversation.show(content, opts),
  hint: (content) => conversation.hint(content),
  echo: (line) => conversation.echo(text("PROMPT"), line),
  keep: (line) => {
    if (!input.value) setInput(line);
  },
  keepTypedLine: () => {
    if (input.value) conversation.keep(input.value);
  },
  roster: {
    set: (names) => { roster.set(names); count(); },
    add: (name) => { roster.add(name); count(); },
    remove: (name) => { roster.remove(name); count(); },
  },
  setState,
  ended,
};

function count() {
  $("people-count").textContent = String(roster.names.size);
}

function setState(state) {
  const node = $("state");
  node.dataset.state = state;
  node.textContent = STATES[state] ? text(STATES[state]) : "";
}

// Login and the end of a session ------------------------------------------------

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  if (enter.disabled) return;
  enter.disabled = true;
  form.setAttribute("aria-busy", "true");
  say([]);
  let result;
  try {
    result = await login.submit(username.value, password.value);
  } finally {
    enter.disabled = false;
    form.removeAttribute("aria-busy");
  }
  if (result === null) {
    (login.stage === "username" ? username : password).select();
    return;
  }
  password.value = "";
  signedIn(result.user);
  session = new Session(ui, result);
  session.start(result.text);
});

function signedIn(user) {
  document.body.classList.replace("signed-out", "signed-in");
  $("who").textContent = visible(user);
  form.hidden = true;
  chat.hidden = composer.hidden = people.hidden = leave.hidden = false;
  input.focus();
}

function ended(said, error) {
  session = null;
  document.body.classList.replace("signed-in", "signed-out");
  document.body.classList.remove("show-people");
  people.setAttribute("aria-expanded", "false");
  composer.hidden = people.hidden = leave.hidden = true;
  $("who").textContent = "";
  form.hidden = false;
  say(said === null || said === undefined ? [] : [{ text: said, error }]);
  password.focus();
}

leave.addEventListener("click", () => {
  if (session) session.type("logout");
});

// The page going away: log out as the terminal client does when it is closed.
window.addEventListener("pagehide", () => {
  if (session) session.logout();
});

// The online list -----------------------------------------------------------

function pick(name) {
  setInput(`message ${name} `);
  document.body.classList.remove("show-people");
  people.setAttribute("aria-expanded", "false");
  input.focus();
}

people.addEventListener("click", () => {
  const open = document.body.classList.toggle("show-people");
  people.setAttribute("aria-expanded", String(open));
});

// The input line ------------------------------------------------------------

const typed = [];          // the lines typed on this page, oldest first
let recall = null;         // where Up/Down is in them
let draft = null;          // the line being typed when Up was first pressed
let lastKey = null;

function setInput(value) {
  input.value = value;
  input.setSelectionRange(value.length, value.length);
}

composer.addEventListener("submit", (event) => {
  event.preventDefault();
  const line = input.value;
  input.value = "";
  recall = draft = null;
  if (!isBlank(line) && typed[typed.length - 1] !== line) {
    typed.push(line);
    if (typed.length > HISTORY_LIMIT) typed.shift();
  }
  if (session) session.type(line);
});

input.addEventListener("keydown", (event) => {
  const key = event.key;
  const plain = !(event.altKey || event.ctrlKey || event.metaKey || event.shiftKey);
  if (event.isComposing) return;
  if (key === "ArrowUp" && plain) {
    event.preventDefault();
    if (!typed.length || recall === 0) return;
    if (recall === null) {
      draft = input.value;
      recall = typed.length;
    }
    recall -= 1;
    setInput(typed[recall]);
  } else if (key === "ArrowDown" && plain) {
    event.preventDefault();
    if (recall === null) return;
    recall += 1;
    if (recall >= typed.length) {
      recall = null;
      setInput(draft || "");
      draft = null;
    } else {
      setInput(typed[recall]);
    }
  } else if (key === "Tab" && plain) {
    event.preventDefault();
    complete(lastKey === "Tab");
  }
  lastKey = key;
});

input.addEventListener("input", () => {
  lastKey = null;
});

const SPACE = /\s/;

/** Tab: a unique candidate completed with a space after it, several to
 * their common prefix, and listed at the second Tab (lineedit._complete). */
function complete(again) {
  if (!session) return;
  const value = input.value;
  const cursor = input.selectionStart ?? value.length;
  let start = cursor;
  while (start && !SPACE.test(value[start - 1])) start -= 1;
  const prefix = value.slice(start, cursor);
  const words = value.slice(0, start).split(/\s+/).filter(Boolean);
  const found = [...new Set(session.candidates(words))].filter((name) => name.startsWith(prefix)).sort();
  if (!found.length) return;
  let insert = null;
  if (found.length === 1) {
    const atEnd = cursor === value.length || !SPACE.test(value[cursor]);
    insert = found[0].slice(prefix.length) + (atEnd ? " " : "");
  } else {
    let common = found[0];
    for (const name of found) while (!name.startsWith(common)) common = common.slice(0, -1);
    if (common.length > prefix.length) insert = common.slice(prefix.length);
    else if (again) ui.show(found.join("  "));
  }
  if (insert !== null) {
    input.value = value.slice(0, cursor) + insert + value.slice(input.selectionEnd ?? cursor);
    input.setSelectionRange(cursor + insert.length, cursor + insert.length);
  }
}

// Start -----------------------------------------------------------------------

async function main() {
  enter.disabled = true;
  try {
    await loadTexts();
  } catch (exc) {
    say([{ text: String(exc && exc.message ? exc.message : exc) }]);
    return;
  }
  const label = (name) => text(name).replace(/[:\s]+$/, "");
  document.querySelector('label[for="username"]').textContent = label("PROMPT_USERNAME");
  document.querySelector('label[for="password"]').textContent = label("PROMPT_PASSWORD");
  $("prompt").textContent = text("PROMPT").trim();
  setState("off");
  $("state").textContent = "";
  enter.disabled = false;
  username.focus();
}

main();
