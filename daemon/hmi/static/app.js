// dashbridge virtual head unit: a client of the org.dashbridge D-Bus API through the bridge's
// WebSocket (daemon/hmi/bridge.py).  Plain JavaScript module, no framework, no build step.
// State: the last Daemon1.GetSnapshot, kept current by the daemon's signals; a signal is applied
// only if it comes from the snapshot's sender with a serial above its generation.

const $ = (sel) => document.querySelector(sel);
const el = (tag, props = {}, ...kids) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "class") e.className = v;
    else if (k === "on") for (const [ev, fn] of Object.entries(v)) e.addEventListener(ev, fn);
    else if (k === "data") Object.assign(e.dataset, v);
    else e[k] = v;
  }
  for (const kid of kids) if (kid !== null && kid !== undefined) e.append(kid);
  return e;
};

let ws = null;
let nextId = 1;
const pending = new Map();       // request id -> {resolve, reject}
let snap = null;                 // {generation, sender, state}
let recent = [];                 // signals since the last snapshot (re-applied after a newer one)
let resyncTimer = null;
let tab = "phones";
let openMessage = null;          // id of the message being read
let dialed = "";
let promptValue = "";
let shownIncoming = null;        // call id on the incoming card
const S = () => (snap ? snap.state : {});

// -- the bridge -------------------------------------------------------------------------------

function connect() {
  const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws";
  ws = new WebSocket(url);
  ws.onmessage = (ev) => onFrame(JSON.parse(ev.data));
  ws.onclose = () => {
    banner("Reconnecting to the head unit…");
    for (const p of pending.values()) p.reject({ name: "Disconnected", message: "the connection to the head unit closed" });
    pending.clear();
    setTimeout(connect, 1000);
  };
}

function send(obj) {
  if (!ws || ws.readyState !== WebSocket.OPEN) return Promise.reject({ name: "Disconnected", message: "not connected" });
  const id = nextId++;
  ws.send(JSON.stringify({ ...obj, id }));
  return new Promise((resolve, reject) => pending.set(id, { resolve, reject }));
}

// Call Iface1.Member(args); errors become one visible line, and reject.
async function api(method, ...args) {
  try {
    return await send({ type: "call", method, args });
  } catch (err) {
    toast(`${method.split(".")[1]}: ${err.message || err.name}`);
    throw err;
  }
}

function onFrame(m) {
  if (m.type === "reply" || m.type === "error") {
    const p = pending.get(m.id);
    if (!p) { if (m.type === "error") toast(m.message); return; }
    pending.delete(m.id);
    if (m.type === "reply") p.resolve(m.result); else p.reject(m);
  } else if (m.type === "snapshot") {
    snap = { generation: m.generation, sender: m.sender, state: m.state };
    normalise(snap.state);
    const later = recent.filter((s) => s.sender === snap.sender && s.serial > snap.generation);
    recent = later;
    for (const s of later) apply(s, true);
    banner(null);
    render();
  } else if (m.type === "signal") {
    recent.push(m);
    if (recent.length > 500) recent.shift();
    if (!snap || m.sender !== snap.sender || m.serial <= snap.generation) return;
    apply(m, false);
    render();
  } else if (m.type === "daemon") {
    if (!m.available) { banner("dashbridge is not running — waiting for it"); }
  }
}

function resync() {
  clearTimeout(resyncTimer);
  resyncTimer = setTimeout(() => { if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: "resync" })); }, 150);
}

// -- the model ------------------------------------------------------------------------------------

function normalise(st) {
  for (const k of ["Daemon1", "Phones1", "Calls1", "Contacts1", "Messages1", "Navigation1", "Cloud1"]) st[k] = st[k] || {};
  const p = st.Phones1;
  p.Prompts = (p.Prompts || []).map((t) => Array.isArray(t) ? promptOf(t[0], t[1], t[2], t[3], t[4], t[5]) : t);
  p.Phones = p.Phones || []; p.Nearby = p.Nearby || [];
  st.Calls1.Calls = st.Calls1.Calls || []; st.Calls1.Phones = st.Calls1.Phones || [];
  st.Messages1.Recent = st.Messages1.Recent || [];
  st.Navigation1.Pending = st.Navigation1.Pending || [];
}

function promptOf(prompt, kind, address, name, code, seconds) {
  return { prompt, kind, address, name, code, deadline: Date.now() + seconds * 1000 };
}

function upsert(list, key, obj) {
  const i = list.findIndex((x) => x[key] === obj[key]);
  if (i >= 0) list[i] = { ...list[i], ...obj }; else list.push(obj);
}

function apply(sig, replay) {
  const st = S();
  const a = sig.args;
  const later = replay ? () => {} : resync;
  switch (`${sig.interface}.${sig.member}`) {
    case "Phones1.PromptRequested":
      st.Phones1.Prompts = st.Phones1.Prompts.filter((p) => p.prompt !== a[0]);
      st.Phones1.Prompts.push(promptOf(...a)); promptValue = ""; break;
    case "Phones1.PromptCancelled":
      st.Phones1.Prompts = st.Phones1.Prompts.filter((p) => p.prompt !== a[0]); break;
    case "Phones1.PairingFinished":
      if (!replay) toast(a[1] ? (a[2] ? `Paired. ${a[2].replace(/^paired; /, "")}` : "Phone paired") : `Pairing did not work: ${a[2]}`);
      later(); break;
    case "Calls1.CallAdded": case "Calls1.CallChanged":
      upsert(st.Calls1.Calls, "Id", { ...a[1], Id: a[0] }); break;
    case "Calls1.CallRemoved":
      st.Calls1.Calls = st.Calls1.Calls.filter((c) => c.Id !== a[0]); break;
    case "Calls1.PhoneChanged":
      if (a[1].Connected === false) st.Calls1.Phones = st.Calls1.Phones.filter((p) => p.Address !== a[0]);
      else upsert(st.Calls1.Phones, "Address", { ...a[1], Address: a[0] });
      break;
    case "Messages1.MessageReceived":
      st.Messages1.Recent = [a[0], ...st.Messages1.Recent.filter((m) => m.id !== a[0].id)];
      if (a[0].direction === "in" && !a[0].read) st.Messages1.Unread = { ...(st.Messages1.Unread || {}), [a[0].phone]: ((st.Messages1.Unread || {})[a[0].phone] || 0) + 1 };
      break;
    case "Messages1.MessageChanged":
      st.Messages1.Recent = st.Messages1.Recent.map((m) => (m.id === a[0] ? { ...m, ...a[1] } : m)); later(); break;
    case "Navigation1.IntentOffered":
      upsert(st.Navigation1.Pending, "id", a[0]); break;
    case "Navigation1.IntentChanged":
      if (a[1] === "accepted") st.Navigation1.Pending = st.Navigation1.Pending.map((i) => (i.id === a[0] ? { ...i, state: a[1] } : i));
      else st.Navigation1.Pending = st.Navigation1.Pending.filter((i) => i.id !== a[0]);
      break;
    case "Cloud1.FeatureChanged":
      st.Cloud1.Features = { ...(st.Cloud1.Features || {}), [a[0]]: [a[1], a[2], a[3]] }; break;
    case "Cloud1.BackendStateChanged":
      st.Cloud1.BackendState = a[0]; st.Cloud1.BackendReason = a[1]; break;
    case "Cloud1.RegistrationChanged":
      st.Cloud1.Registration = a[0]; st.Cloud1.RegistrationReason = a[1]; break;
    case "Cloud1.AccountLinkChanged":
      st.Cloud1.AccountLink = a[0]; st.Cloud1.AccountLinkReason = a[1]; break;
    default:
      if (sig.member === "PropertiesChanged") {
        st[sig.interface] = { ...(st[sig.interface] || {}), ...a[0] };
        if (sig.interface === "Phones1" && "PairingWindow" in a[0]) later();
      } else {
        later();  // anything else: read the state again (ordered by the snapshot's generation)
      }
  }
}

// -- drawing --------------------------------------------------------------------------------------

function render() {
  if (!snap) return;
  renderBar(); renderPhones(); renderMessages(); renderNav(); renderCloud(); renderHealth();
  renderPrompt(); renderCalls();
}

const pct = (v) => (v === undefined || v < 0 ? "?" : `${v}%`);

function renderBar() {
  const st = S();
  const chips = $("#phone-chips");
  chips.replaceChildren(...st.Calls1.Phones.map((p) => el("span", { class: `chip ${p.Role}`, title: p.Address },
    `${p.Name} · ${p.Role} · battery ${pct(p.Battery)} · signal ${pct(p.Signal)}${p.Operator ? " · " + p.Operator : ""}`)));
  const c = st.Cloud1;
  const pill = $("#cloud-pill");
  pill.textContent = `cloud: ${c.BackendState || "?"}`;
  pill.className = `pill ${c.BackendState || ""}`;
  const unread = Object.values(st.Messages1.Unread || {}).reduce((x, y) => x + y, 0);
  badge("#unread-badge", unread);
  badge("#offer-badge", st.Navigation1.Pending.filter((i) => i.state === "offered").length);
}

function badge(sel, n) { const b = $(sel); b.hidden = !n; b.textContent = n; }

function renderPhones() {
  const p = S().Phones1;
  const status = S().Calls1.Phones;
  $("#pair-button").textContent = p.PairingWindow ? "Stop pairing" : "Add a phone";
  $("#pairing-status").textContent = p.State && p.State !== "ready" ? `Bluetooth: ${p.State}` :
    (p.PairingWindow ? "The car is visible as a new device: choose it in the phone's Bluetooth settings." :
      (p.Phones.length ? "" : "No phone paired yet: tap \u201cAdd a phone\u201d."));
  $("#phones-list").replaceChildren(...p.Phones.map((ph) => {
    const s = status.find((x) => x.Address === ph.Address);
    const sub = [ph.State + (ph.Role ? ` (${ph.Role})` : ""), s ? `battery ${pct(s.Battery)}` : null,
      s ? `signal ${pct(s.Signal)}` : null, s && s.Operator ? s.Operator : null, ph.Reason || null].filter(Boolean).join(" · ");
    const btns = [];
    if (ph.State === "connected") btns.push(el("button", { textContent: "Disconnect", on: { click: () => api("Phones1.Disconnect", ph.Address) } }));
    else btns.push(el("button", { textContent: "Connect", on: { click: () => api("Phones1.Connect", ph.Address) } }));
    if (ph.Priority > 0) btns.push(el("button", { textContent: "Make first", on: { click: () => api("Phones1.SetPriority", ph.Address, 0) } }));
    btns.push(el("button", { textContent: "Forget", class: "stop", on: { click: () => api("Phones1.Forget", ph.Address) } }));
    return el("li", { class: "phone", data: { address: ph.Address } },
      el("div", { class: "grow" }, el("div", { class: "title", textContent: ph.Name }), el("div", { class: "sub", textContent: sub })), ...btns);
  }));
  const nearby = p.PairingWindow ? p.Nearby : [];
  $("#nearby-title").hidden = !nearby.length;
  $("#nearby-list").replaceChildren(...nearby.map((n) => el("li", { class: "nearby" },
    el("div", { class: "grow" }, el("div", { class: "title", textContent: n.Name || n.Address }), el("div", { class: "sub", textContent: n.Address })),
    el("button", { class: "primary", textContent: "Pair", on: { click: () => api("Phones1.Pair", n.Address) } }))));
}

function renderPrompt() {
  const prompts = S().Phones1.Prompts;
  const p = prompts[0];
  $("#prompt").hidden = !p;
  if (!p) return;
  const entry = p.kind === "enter_pin" || p.kind === "enter_passkey";
  const display = p.kind === "display_pin" || p.kind === "display_passkey";
  $("#prompt").dataset.prompt = p.prompt;
  $("#prompt-title").textContent = `Pair with ${p.name || p.address}?`;
  $("#prompt-text").textContent = {
    confirm_passkey: "Does the phone show the same number?",
    authorize_pairing: "Allow this phone to pair with the car?",
    enter_pin: "Enter the PIN shown on the phone", enter_passkey: "Enter the code shown on the phone",
    display_pin: "Type this PIN on the phone", display_passkey: "Type this code on the phone",
    authorize_service: `Allow ${p.name || p.address} to use ${p.code}?`,
  }[p.kind] || p.kind;
  $("#prompt-code").textContent = entry || p.kind === "authorize_service" || p.kind === "authorize_pairing" ? "" : p.code;
  $("#prompt-entry").hidden = !entry;
  $("#prompt-value").textContent = promptValue || "—";
  $("#prompt-yes").hidden = display;
  $("#prompt-no").textContent = display ? "Cancel" : "No";
  $("#prompt-yes").textContent = entry ? "OK" : "Yes";
}

function answerPrompt(accept) {
  const p = S().Phones1.Prompts[0];
  if (!p) return;
  const entry = p.kind === "enter_pin" || p.kind === "enter_passkey";
  api("Phones1.AnswerPrompt", p.prompt, accept, accept && entry ? promptValue : "").catch(() => {});
  S().Phones1.Prompts = S().Phones1.Prompts.filter((x) => x.prompt !== p.prompt);
  promptValue = "";
  renderPrompt();
}

const initial = (name) => {
  const c = (name || "").trim().charAt(0).toUpperCase();
  return /\p{L}/u.test(c) ? c : "\u260E";  // a letter, else a telephone sign
};
const fmtDuration = (s) => `${Math.floor(s / 60)}:${String(Math.floor(s % 60)).padStart(2, "0")}`;

function renderCalls() {
  const calls = S().Calls1.Calls.filter((c) => c.State !== "disconnected");
  const ringing = calls.find((c) => c.State === "incoming" || c.State === "waiting");
  const inc = $("#incoming");
  inc.hidden = !ringing;
  if (ringing) {
    shownIncoming = ringing.Id;
    inc.dataset.call = ringing.Id;
    drawPhoto($("#incoming-photo"), ringing);
    $("#incoming-name").textContent = ringing.Name || ringing.Number || "Unknown caller";
    $("#incoming-number").textContent = ringing.Number === "withheld" ? "Number withheld" :
      (ringing.Name && ringing.Name !== ringing.Number ? ringing.Number : "");
    $("#incoming-phone").textContent = `on ${ringing.PhoneName || ringing.Phone}` + (ringing.State === "waiting" ? " · call waiting" : "");
    $("#answer").textContent = ringing.State === "waiting" ? "Hold & answer" : "Answer";
  }
  const current = calls.find((c) => ["active", "dialing", "alerting"].includes(c.State)) || calls.find((c) => c.State === "held");
  const ic = $("#incall");
  ic.hidden = !current || !!ringing;
  if (!current) { $("#incall-keys").hidden = true; return; }
  ic.dataset.call = current.Id;
  ic.dataset.state = current.State;
  drawPhoto($("#incall-photo"), current);
  $("#incall-name").textContent = current.Name || current.Number;
  $("#incall-number").textContent = current.Name && current.Name !== current.Number ? current.Number : "";
  const others = calls.filter((c) => c.Id !== current.Id && c.State === "held");
  $("#incall-other").textContent = others.map((c) => `${c.Name || c.Number} on hold`).join(" · ");
  $("#incall-swap").hidden = !others.length;
  $("#incall-hold").textContent = current.State === "held" ? "Resume" : "Hold";
  tickDuration();
}

// The caller's photo from the phone's contacts (Contacts1.Lookup + GetContact), else an initial.
const photos = new Map();  // number -> data: URL, or "" (none)
function drawPhoto(box, call) {
  const url = photos.get(call.Number);
  if (url) {
    if (box.dataset.src !== url) { box.replaceChildren(el("img", { src: url, alt: "" })); box.dataset.src = url; }
    return;
  }
  box.dataset.src = "";
  box.textContent = initial(call.Name || call.Number);
  if (call.NameSource === "contacts" && !photos.has(call.Number)) {
    photos.set(call.Number, "");
    send({ type: "call", method: "Contacts1.Lookup", args: [call.Number] })
      .then(([, id]) => send({ type: "call", method: "Contacts1.GetContact", args: [id] }))
      .then(([c]) => {
        if (c.Photo) { photos.set(call.Number, `data:${c.PhotoType || "image/jpeg"};base64,${c.Photo}`); renderCalls(); }
      })
      .catch(() => { /* no photo: the initial stays */ });
  }
}

function tickDuration() {
  const ic = $("#incall");
  if (ic.hidden) return;
  const c = S().Calls1.Calls.find((x) => x.Id === ic.dataset.call);
  if (!c) return;
  $("#incall-duration").textContent = c.State === "active" || c.State === "held"
    ? (c.StartTime ? fmtDuration(Math.max(0, Date.now() / 1000 - c.StartTime)) : "0:00") + (c.State === "held" ? " · on hold" : "")
    : c.State === "dialing" ? "Calling…" : "Ringing…";
}

function renderMessages() {
  const msgs = S().Messages1.Recent;
  $("#messages-list").replaceChildren(...msgs.map((m) => el("li", {
    class: `message tappable ${m.read || m.direction === "out" ? "" : "unread"}`, data: { id: m.id },
    on: { click: () => readMessage(m) } },
  el("div", { class: "grow" },
    el("div", { class: "title", textContent: (m.direction === "out" ? "To " + m.recipient : m.sender_name || m.sender) }),
    el("div", { class: "sub", textContent: (m.subject ? m.subject + " — " : "") + m.preview })),
  el("div", { class: "sub", textContent: `${m.type} · ${(m.received || "").slice(11, 16)}` }))));
}

// Replies a driver can send without a keyboard.
const QUICK_REPLIES = ["On my way", "Running late", "Can't talk, driving"];

async function readMessage(m) {
  openMessage = m.id;
  $("#message-view").hidden = false;
  $("#messages-list").hidden = true;
  $("#message-from").textContent = m.sender_name || m.sender;
  $("#message-meta").textContent = `${m.type} from ${m.sender} · ${m.received}${m.subject ? " · " + m.subject : ""}`;
  $("#message-body").textContent = m.preview;
  $("#quick-replies").replaceChildren(...(m.direction === "in" ? QUICK_REPLIES : []).map((text) => el("button", {
    class: "quick-reply", textContent: text,
    on: { click: () => api("Messages1.Reply", m.id, text).then(() => toast(`Sent: ${text}`)).catch(() => {}) } })));
  try {
    const [full] = await api("Messages1.Get", m.id);
    if (openMessage === m.id) $("#message-body").textContent = full.body || full.preview;
    if (!m.read) await api("Messages1.MarkRead", m.id, true);
  } catch (_) { /* shown as a toast */ }
}

function renderNav() {
  const n = S().Navigation1;
  $("#nav-service").textContent = n.ServiceAvailable ? "" : "The navigation system is not running: accepted destinations wait for it.";
  $("#offers").replaceChildren(...n.Pending.map((i) => {
    const where = i.kind === "coordinates" ? `${Number(i.latitude).toFixed(5)}, ${Number(i.longitude).toFixed(5)}` : (i.query || i.url || "");
    const from = { cloud: "sent from the app", companion: "from your phone's app (Bluetooth)" }[i.source] || "from a message";
    const kids = [el("div", { class: "grow" }, el("div", { class: "title", textContent: i.label || where }),
      el("div", { class: "sub", textContent: `${where} · ${from}` }))];
    if (i.state === "offered") {
      kids.push(el("button", { class: "big stop decline", textContent: "Decline", on: { click: () => api("Navigation1.Dismiss", i.id) } }));
      kids.push(el("button", { class: "big go accept", textContent: "Go", on: { click: () => api("Navigation1.Accept", i.id) } }));
    } else {
      kids.push(el("span", { class: "hint", textContent: "waiting for navigation" }));
    }
    return el("li", { class: "offer", data: { id: i.id, state: i.state } }, ...kids);
  }));
}

function renderCloud() {
  const c = S().Cloud1;
  const box = $("#cloud-backend");
  if (c.Unavailable) { box.textContent = c.Unavailable; return; }
  const line = (label, value, reason) => el("p", {}, el("b", { textContent: `${label}: ` }), `${value || "?"}`,
    reason ? el("span", { class: "hint", textContent: ` — ${reason}` }) : null);
  box.replaceChildren(
    line("Backend", c.BackendState, c.BackendReason),
    line("Registration", c.Registration, c.RegistrationReason),
    line("Account", c.AccountLink, c.AccountLinkReason),
    line("Entitlements", c.EntitlementsSource, c.EntitlementsVersion ? `version ${c.EntitlementsVersion}` : ""),
    line("Waiting to send", String(c.OutboxDepth ?? 0), ""));
  const feats = Object.entries(c.Features || {}).sort(([a], [b]) => a.localeCompare(b));
  $("#features").replaceChildren(...feats.map(([name, [on, source, reason]]) => el("li", { class: "feature", data: { name, source } },
    el("div", { class: "grow" }, el("div", { class: "title", textContent: name.replace(/_/g, " ") }),
      el("div", { class: "sub reason", textContent: `${source}: ${reason}` })),
    el("span", { class: on ? "on" : "off", textContent: on ? "ON" : "OFF" }))));
}

function renderHealth() {
  const d = S().Daemon1;
  $("#daemon-status").textContent = `dashbridge ${d.Version || ""}: ${d.Status || ""}`;
  $("#health").replaceChildren(...Object.entries(d.Health || {}).sort().map(([name, [state, reason]]) => el("li", { class: "component", data: { name } },
    el("div", { class: "grow" }, el("div", { class: "title", textContent: name }), el("div", { class: "sub", textContent: reason || "" })),
    el("span", { class: `state-${state}`, textContent: state }))));
}

// -- screens that read on demand ---------------------------------------------------------------------

const contactRow = (r) => el("li", { class: "contact tappable", data: { id: String(r.Id) }, on: { click: () => dial(r.Number) } },
  el("div", { class: "grow" }, el("div", { class: "title", textContent: r.Name }), el("div", { class: "sub", textContent: r.Number || "" })),
  el("span", { class: "hint", textContent: r.Letter || "" }));

// Search without a keyboard: letters tapped on the pad build the query for Contacts1.Search.
let searchText = "";
const SEARCH_KEYS = [..."ABCDEFGHIJKLMNOPQRSTUVWXYZ", "␣"];

async function loadFavourites() {
  try {
    const [rows] = await api("Contacts1.ListFavourites", "");
    $("#favourites").replaceChildren(...rows.map((r) => el("button", { class: "favourite", data: { id: String(r.Id) }, on: { click: () => dial(r.Number) } },
      el("span", { textContent: r.Name }), el("span", { class: "sub", textContent: r.Number || "" }))));
  } catch (_) {
    $("#favourites").replaceChildren();
  }
}

async function searchContacts() {
  $("#search-text").textContent = searchText;
  if (!searchText.trim()) { loadContacts(); return; }
  const asked = searchText;
  try {
    const [rows] = await api("Contacts1.Search", searchText.trim(), 50);
    if (asked !== searchText) return;  // a later tap's answer wins
    $("#contacts-list").replaceChildren(...rows.map(contactRow));
    if (!rows.length) $("#contacts-list").replaceChildren(el("li", { class: "none" }, `No contact matches “${searchText.trim()}”`));
  } catch (_) {
    $("#contacts-list").replaceChildren(el("li", {}, "Contacts are not available right now"));
  }
}

function searchKey(k) {
  searchText = (searchText + (k === "␣" ? " " : k.toLowerCase())).slice(0, 40);
  searchContacts();
}

async function loadContacts(offset = 0) {
  if (searchText.trim()) { searchContacts(); return; }
  try {
    loadFavourites();
    const [index] = await api("Contacts1.Index", "");
    $("#az").replaceChildren(...index.map(([letter, off]) => el("button", { textContent: letter, on: { click: () => loadContacts(off) } })));
    const [total, rows] = await api("Contacts1.List", "", offset, 50);
    $("#contacts-list").replaceChildren(...rows.map(contactRow));
    if (!rows.length) $("#contacts-list").replaceChildren(el("li", {}, total ? "" : "No contacts on the phone"));
  } catch (_) {
    $("#contacts-list").replaceChildren(el("li", {}, "Contacts are not available right now"));
  }
}

async function loadHistory() {
  try {
    const [rows] = await api("Contacts1.GetCallHistory", "", 50);
    $("#history-list").replaceChildren(...rows.map((r) => el("li", { class: "tappable", on: { click: () => dial(r.Number) } },
      el("div", { class: "grow" }, el("div", { class: "title", textContent: r.Name || r.Number }),
        el("div", { class: "sub", textContent: `${r.Kind} · ${r.Time}` })))));
    if (!rows.length) $("#history-list").replaceChildren(el("li", {}, "No calls"));
  } catch (_) {
    $("#history-list").replaceChildren(el("li", {}, "Call history is not available right now"));
  }
}

function dial(number) {
  if (!number) return;
  api("Calls1.Dial", number, "").catch(() => {});
}

function keypad(container, keys, onKey) {
  container.replaceChildren(...keys.map((k) => el("button", { textContent: k, data: { key: k }, on: { click: () => onKey(k) } })));
}

// -- wiring ---------------------------------------------------------------------------------------------

let toastTimer = null;
function toast(text) {
  const t = $("#toast");
  t.textContent = String(text).split("\n")[0];
  t.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { t.hidden = true; }, 6000);
}

function banner(text) { const b = $("#banner"); b.hidden = !text; b.textContent = text || ""; }

function show(name) {
  tab = name;
  for (const b of document.querySelectorAll(".tab")) b.classList.toggle("active", b.dataset.tab === name);
  for (const s of document.querySelectorAll(".screen")) s.hidden = s.id !== `tab-${name}`;
  if (name === "contacts") loadContacts();
  if (name === "history") loadHistory();
}

function wire() {
  for (const b of document.querySelectorAll(".tab")) b.addEventListener("click", () => show(b.dataset.tab));
  keypad($("#search-keys"), SEARCH_KEYS, searchKey);
  $("#search-toggle").addEventListener("click", () => {
    const pad = $("#search-pad");
    pad.hidden = !pad.hidden;
    $("#az").hidden = !pad.hidden;
    $("#search-toggle").textContent = pad.hidden ? "Search" : "Done";
    if (pad.hidden) { searchText = ""; searchContacts(); }
  });
  $("#search-del").addEventListener("click", () => { searchText = searchText.slice(0, -1); searchContacts(); });
  $("#search-clear").addEventListener("click", () => { searchText = ""; searchContacts(); });
  $("#pair-button").addEventListener("click", () => (S().Phones1.PairingWindow ? api("Phones1.ClosePairingWindow") : api("Phones1.OpenPairingWindow", 0)).catch(() => {}));
  $("#prompt-yes").addEventListener("click", () => answerPrompt(true));
  $("#prompt-no").addEventListener("click", () => answerPrompt(false));
  keypad($("#prompt-pad"), ["1", "2", "3", "4", "5", "6", "7", "8", "9", "⌫", "0", " "], (k) => {
    promptValue = k === "⌫" ? promptValue.slice(0, -1) : k === " " ? promptValue : (promptValue + k).slice(0, 16);
    renderPrompt();
  });
  $("#answer").addEventListener("click", () => { const id = $("#incoming").dataset.call; if (id) api("Calls1.Answer", id).catch(() => {}); });
  $("#reject").addEventListener("click", () => { const id = $("#incoming").dataset.call; if (id) api("Calls1.Hangup", id).catch(() => {}); });
  $("#hangup").addEventListener("click", () => { const id = $("#incall").dataset.call; if (id) api("Calls1.Hangup", id).catch(() => {}); });
  $("#incall-hold").addEventListener("click", () => {
    const ic = $("#incall");
    api(ic.dataset.state === "held" ? "Calls1.Resume" : "Calls1.Hold", ic.dataset.call).catch(() => {});
  });
  $("#incall-swap").addEventListener("click", () => {
    const c = S().Calls1.Calls.find((x) => x.Id === $("#incall").dataset.call);
    api("Calls1.Swap", c ? c.Phone : "").catch(() => {});
  });
  $("#incall-keypad").addEventListener("click", () => { $("#incall-keys").hidden = !$("#incall-keys").hidden; });
  keypad($("#incall-keys"), ["1", "2", "3", "4", "5", "6", "7", "8", "9", "*", "0", "#"],
    (k) => api("Calls1.SendTones", $("#incall").dataset.call, k).catch(() => {}));
  keypad($("#dial-pad"), ["1", "2", "3", "4", "5", "6", "7", "8", "9", "*", "0", "#"], (k) => {
    dialed = (dialed + k).slice(0, 40); $("#dial-number").textContent = dialed;
  });
  $("#dial-del").addEventListener("click", () => { dialed = dialed.slice(0, -1); $("#dial-number").textContent = dialed; });
  $("#dial-call").addEventListener("click", () => dial(dialed));
  $("#message-close").addEventListener("click", () => {
    openMessage = null; $("#message-view").hidden = true; $("#messages-list").hidden = false;
  });
  $("#theme").addEventListener("click", () => {
    const root = document.documentElement;
    const dark = root.dataset.theme ? root.dataset.theme === "dark" : matchMedia("(prefers-color-scheme: dark)").matches;
    root.dataset.theme = dark ? "light" : "dark";
    try { localStorage.setItem("dashbridge-theme", root.dataset.theme); } catch (_) { /* private mode */ }
  });
  try { const t = localStorage.getItem("dashbridge-theme"); if (t) document.documentElement.dataset.theme = t; } catch (_) { /* none */ }
  const q = new URLSearchParams(location.search);
  if (q.get("theme")) document.documentElement.dataset.theme = q.get("theme");
  if (q.get("tab")) show(q.get("tab"));
  const tick = () => {
    const d = new Date();
    $("#clock").textContent = `${String(d.getHours()).padStart(2, "0")}:${String(d.getMinutes()).padStart(2, "0")}`;
    tickDuration();
    const p = snap && S().Phones1.Prompts[0];
    $("#prompt-countdown").textContent = p ? `${Math.max(0, Math.ceil((p.deadline - Date.now()) / 1000))} s left` : "";
  };
  tick();
  setInterval(tick, 500);
}

wire();
connect();
