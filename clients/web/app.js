// herold's live-alert page: plain JavaScript, no build step.
//
// Following a folder creates a persistent `websocket:` subscription through the REST API
// (so the broker keeps it while the page is closed); alerts arrive over one WebSocket
// (/v1.0/ws?access_token=…, the token in the query because browsers cannot set headers on
// a WebSocket). The page keeps the last cursor per user and reconnects with ?since=<cursor>
// after any drop or reload, so what happened meanwhile is replayed and shown as missed.
"use strict";

const TEXT = {
  de: {
    title: "Live-Meldungen", signin: "Anmelden", tokenLabel: "Zugangs-Token",
    tokenHelp: "Fügen Sie das Token ein, das Sie erhalten haben.", connect: "Verbinden",
    signout: "Abmelden", follow: "Folgen", resourceLabel: "Ordner, Akte oder Kalender",
    resourceHelp: "Ein Pfad wie /dms/cabinets/bau oder me/calendar; alles darunter ist eingeschlossen.",
    followButton: "Folgen", unfollow: "Nicht mehr folgen", followsLabel: "Gefolgt",
    desktop: "Desktop-Benachrichtigungen erlauben", alerts: "Meldungen",
    noAlerts: "Noch keine Meldungen.", online: "Verbunden als {user}.",
    offline: "Nicht verbunden.", reconnecting: "Verbindung unterbrochen, neuer Versuch …",
    badToken: "Das Token wurde abgelehnt: {message}", renew: "Ihr Token läuft bald ab. Fügen Sie ein neues ein.",
    created: "neu", updated: "geändert", deleted: "gelöscht", by: "von {actor}",
    in: "in {where}", at: "um {time}", movedFrom: "vorher {previous}",
    missed: "{count} Meldungen aus der Zeit, in der Sie nicht verbunden waren.",
    lost: "Einige ältere Meldungen sind nicht mehr verfügbar.", failed: "Fehler: {message}",
  },
  en: {
    title: "Live alerts", signin: "Sign in", tokenLabel: "Access token",
    tokenHelp: "Paste the token you were given.", connect: "Connect", signout: "Sign out",
    follow: "Follow", resourceLabel: "Folder, file or calendar",
    resourceHelp: "A path such as /dms/cabinets/bau or me/calendar; everything beneath it is included.",
    followButton: "Follow", unfollow: "Unfollow", followsLabel: "Following",
    desktop: "Allow desktop notifications", alerts: "Alerts", noAlerts: "No alerts yet.",
    online: "Connected as {user}.", offline: "Not connected.",
    reconnecting: "Connection lost, trying again …", badToken: "The token was refused: {message}",
    renew: "Your token expires soon. Paste a new one.", created: "new", updated: "changed",
    deleted: "deleted", by: "by {actor}", in: "in {where}", at: "at {time}",
    movedFrom: "was {previous}", missed: "{count} alerts from while you were not connected.",
    lost: "Some older alerts are no longer available.", failed: "Error: {message}",
  },
};

const MAX_ALERTS = 200;
const state = {
  lang: (localStorage.getItem("herold.lang") || navigator.language || "de").startsWith("de") ? "de" : "en",
  token: sessionStorage.getItem("herold.token") || "",
  user: null,
  ws: null,
  retryMs: 1000,
  connectedAt: 0,
  missedCount: 0,
  seen: new Set(), // item ids: a replay may repeat an item already shown
};

const $ = (id) => document.getElementById(id);

function t(key, values = {}) {
  return TEXT[state.lang][key].replace(/\{(\w+)\}/g, (_, name) => values[name] ?? "");
}

function applyLanguage() {
  document.documentElement.lang = state.lang;
  document.title = "herold – " + t("title");
  for (const el of document.querySelectorAll("[data-i18n]")) {
    el.textContent = t(el.dataset.i18n);
  }
  for (const el of document.querySelectorAll("[data-i18n-label]")) {
    el.setAttribute("aria-label", t(el.dataset.i18nLabel));
  }
  $("lang-de").setAttribute("aria-pressed", String(state.lang === "de"));
  $("lang-en").setAttribute("aria-pressed", String(state.lang === "en"));
  renderFollows(state.follows || []);
  setStatus(state.statusKey || "offline", state.statusValues);
}

function setStatus(key, values = {}, kind) {
  state.statusKey = key;
  state.statusValues = values;
  $("status").textContent = t(key, values);
  $("status").dataset.state = kind || (key === "online" ? "online" : "offline");
}

// The token's claims, for the user's name only: the broker checks the token itself.
function tokenUser(token) {
  try {
    const payload = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(payload)).sub || null;
  } catch {
    return null;
  }
}

function cursorKey() {
  return "herold.cursor." + state.user;
}

async function api(method, path, body) {
  const response = await fetch(path, {
    method,
    headers: Object.assign({ Authorization: "Bearer " + state.token },
                           body ? { "Content-Type": "application/json" } : {}),
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await response.text();
  const json = text ? JSON.parse(text) : null;
  if (!response.ok) {
    throw new Error(json && json.error ? json.error.message : response.statusText);
  }
  return json;
}

// ---- following ----

async function loadFollows() {
  const follows = [];
  let path = "/v1.0/subscriptions";
  while (path) {
    const page = await api("GET", path);
    for (const s of page.value) {
      if (s.notificationUrl === "websocket:") {
        follows.push(s);
      }
    }
    const next = page["@odata.nextLink"];
    path = next ? new URL(next).pathname + new URL(next).search : null;
  }
  state.follows = follows;
  renderFollows(follows);
}

function renderFollows(follows) {
  const list = $("follows");
  list.replaceChildren();
  for (const s of follows) {
    const li = document.createElement("li");
    const code = document.createElement("code");
    code.textContent = s.resource;
    const button = document.createElement("button");
    button.type = "button";
    button.className = "secondary";
    button.textContent = t("unfollow");
    button.setAttribute("aria-label", t("unfollow") + " " + s.resource);
    button.addEventListener("click", async () => {
      try {
        await api("DELETE", "/v1.0/subscriptions/" + s.id);
        await loadFollows();
      } catch (e) {
        setStatus("failed", { message: e.message }, "error");
      }
    });
    li.append(code, button);
    list.append(li);
  }
}

async function follow(resource) {
  const expires = new Date(Date.now() + 7 * 24 * 3600 * 1000).toISOString();
  await api("POST", "/v1.0/subscriptions", {
    changeType: "created,updated,deleted",
    notificationUrl: "websocket:",
    resource,
    expirationDateTime: expires,
  });
  await loadFollows();
}

// ---- alerts ----

function formatTime(iso) {
  return new Date(iso).toLocaleString(state.lang === "de" ? "de-DE" : "en-GB");
}

function showAlert(item, isMissed) {
  if (state.seen.has(item.id)) {
    return;
  }
  state.seen.add(item.id);
  const parts = item.resource.split("/");
  const name = parts.pop() || item.resource;
  const where = parts.join("/") || "/";
  const li = document.createElement("li");
  li.className = isMissed ? "missed" : "";
  li.dataset.resource = item.resource;
  const change = document.createElement("span");
  change.className = "change " + item.changeType;
  change.textContent = t(item.changeType);
  const nameEl = document.createElement("span");
  nameEl.className = "name";
  nameEl.textContent = name;
  const meta = document.createElement("div");
  meta.className = "meta";
  const details = [t("in", { where }), t("at", { time: formatTime(item.eventTime) })];
  if (item.actor) {
    details.push(t("by", { actor: item.actor.replace(/^user:/, "") }));
  }
  if (item.previousResource) {
    details.push(t("movedFrom", { previous: item.previousResource }));
  }
  meta.textContent = details.join(" · ");
  li.append(change, nameEl, meta);
  const list = $("alerts");
  list.prepend(li); // newest first
  while (list.children.length > MAX_ALERTS) {
    list.lastChild.remove();
  }
  $("no-alerts").hidden = true;
  if (isMissed) {
    state.missedCount++;
    $("missed").hidden = false;
    $("missed").textContent = t("missed", { count: state.missedCount });
  } else if ("Notification" in window && Notification.permission === "granted" && document.hidden) {
    new Notification(t(item.changeType) + ": " + name, { body: where, tag: item.id });
  }
}

// ---- the connection ----

function connect() {
  if (state.ws) {
    state.ws.onclose = null;
    state.ws.close();
  }
  const cursor = localStorage.getItem(cursorKey());
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const url = scheme + "//" + location.host + "/v1.0/ws?access_token=" +
              encodeURIComponent(state.token) + (cursor ? "&since=" + cursor : "");
  const ws = new WebSocket(url);
  state.ws = ws;
  ws.onopen = () => {
    state.retryMs = 1000;
    state.connectedAt = Date.now();
    state.missedCount = 0;
    setStatus("online", { user: state.user });
  };
  ws.onmessage = (message) => {
    const frame = JSON.parse(message.data);
    if (frame.op === "notify") {
      for (const item of frame.value) {
        // Replayed items happened before this connection opened.
        showAlert(item, Date.parse(item.eventTime) < state.connectedAt - 500 && !!cursor);
      }
      localStorage.setItem(cursorKey(), frame.cursor);
    } else if (frame.op === "lifecycle" && frame.lifecycleEvent === "missed") {
      $("missed").hidden = false;
      $("missed").textContent = t("lost");
      if (frame.cursor) {
        localStorage.setItem(cursorKey(), frame.cursor);
      }
    } else if (frame.op === "lifecycle" && frame.lifecycleEvent === "reauthorizationRequired") {
      setStatus("renew", {}, "error");
    }
  };
  ws.onclose = (event) => {
    if (state.ws !== ws) {
      return;
    }
    state.ws = null;
    if (!state.token) {
      setStatus("offline");
      return;
    }
    setStatus("reconnecting", {}, "error");
    setTimeout(() => state.token && connect(), state.retryMs);
    state.retryMs = Math.min(state.retryMs * 2, 15000);
  };
}

async function signIn(token) {
  state.token = token.trim();
  state.user = tokenUser(state.token);
  if (!state.user) {
    setStatus("badToken", { message: "?" }, "error");
    return;
  }
  try {
    await loadFollows(); // also proves the token before the WebSocket is opened
  } catch (e) {
    setStatus("badToken", { message: e.message }, "error");
    state.token = "";
    return;
  }
  sessionStorage.setItem("herold.token", state.token);
  $("token").value = ""; // in use now: no need to leave it on screen
  $("signout").hidden = false;
  connect();
}

function signOut() {
  sessionStorage.removeItem("herold.token");
  state.token = "";
  if (state.ws) {
    state.ws.close();
  }
  state.follows = [];
  renderFollows([]);
  $("signout").hidden = true;
  setStatus("offline");
}

document.addEventListener("DOMContentLoaded", () => {
  $("lang-de").addEventListener("click", () => {
    state.lang = "de";
    localStorage.setItem("herold.lang", "de");
    applyLanguage();
  });
  $("lang-en").addEventListener("click", () => {
    state.lang = "en";
    localStorage.setItem("herold.lang", "en");
    applyLanguage();
  });
  $("signin-form").addEventListener("submit", (event) => {
    event.preventDefault();
    signIn($("token").value);
  });
  $("signout").addEventListener("click", signOut);
  $("follow-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await follow($("resource").value.trim());
      $("resource").value = "";
    } catch (e) {
      setStatus("failed", { message: e.message }, "error");
    }
  });
  $("notify-permission").addEventListener("click", () => {
    if ("Notification" in window) {
      Notification.requestPermission();
    }
  });
  applyLanguage();
  if (state.token) {
    signIn(state.token);
  }
});
