"use strict";
// Everything on the page is drawn by the server; this script only counts down, asks before
// an action, and swaps in a freshly drawn page every few seconds.
const serverNow = Date.parse(document.querySelector("#updated time").dateTime);
let skew = serverNow - Date.now();
let busy = 0;

function amount(s) {
  s = Math.ceil(s - 1e-9);
  if (s < 60) return s + " s";
  if (s < 3600) return Math.floor(s / 60) + " min" + (s % 60 ? " " + (s % 60) + " s" : "");
  const m = Math.floor(s / 60);
  if (s < 86400) return Math.floor(m / 60) + " h" + (m % 60 ? " " + (m % 60) + " min" : "");
  const h = Math.floor(s / 3600);
  return Math.floor(h / 24) + " d" + (h % 24 ? " " + (h % 24) + " h" : "");
}

function tick() {
  const now = Date.now() + skew;
  for (const el of document.querySelectorAll(".countdown[data-until]")) {
    const at = Date.parse(el.dataset.until);
    if (isNaN(at) || el.closest(".state-refreshing") && el.dataset.format === "in") continue;
    const left = (at - now) / 1000;
    if (el.dataset.format === "left") el.textContent = left > 0 ? amount(left) + " left" : "expired";
    else el.textContent = left >= 0.5 ? "in " + amount(left) : "now";
  }
}

async function update() {
  if (busy || document.hidden) return;
  try {
    const response = await fetch(location.href, {headers: {"Accept": "text/html"}, cache: "no-store"});
    if (!response.ok || busy) return;
    const html = await response.text();
    // only the drawn part: no <style> or <script> from the answer is ever parsed here
    const drawn = html.slice(html.indexOf("<body>") + 6, html.lastIndexOf("<script"));
    const fresh = new DOMParser().parseFromString(drawn, "text/html");
    for (const id of ["updated", "apps", "events-list"]) {
      const next = fresh.getElementById(id), here = document.getElementById(id);
      if (next && here) here.replaceWith(document.adoptNode(next));
    }
    skew = Date.parse(document.querySelector("#updated time").dateTime) - Date.now();
    const title = /<title>([^<]*)<\/title>/.exec(html);
    if (title) document.title = title[1].replaceAll("&amp;", "&");
    tick();
  } catch (err) { /* keep the last view; the next update retries */ }
}

async function act(button) {
  const appid = button.dataset.appid, action = button.dataset.action;
  if (!window.confirm(button.dataset.confirm)) return;
  const flash = document.getElementById("flash");
  busy++;
  button.disabled = true;
  flash.className = "";
  flash.textContent = (action === "rotate" ? "Refreshing " : "Revoking the token of ") + appid + "…";
  try {
    const response = await fetch("/v1/apps/" + encodeURIComponent(appid) + "/token/" + action,
                                 {method: "POST", headers: {"X-Requested-With": "tokensvc"}});
    const body = await response.json();
    flash.className = response.ok ? "" : "failed";
    flash.textContent = response.ok
      ? appid + ": " + (body.refreshed ? "new token " + body.fingerprint : "token unchanged (" + body.reason + ")")
        + (body.second_force_at ? "; second force refresh at " + body.second_force_at : "")
      : appid + ": " + body.message;
  } catch (err) {
    flash.className = "failed";
    flash.textContent = appid + ": the request failed (" + err + ")";
  } finally {
    button.disabled = false;
    busy--;
    update();
  }
}

document.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-action]");
  if (button) act(button);
});
tick();
setInterval(tick, 1000);
setInterval(update, 5000);
