// packfleet console script 1.1 (hand-written, no dependencies).
// Live tail of an execution's event messages over Server-Sent Events. One stream per tab: it is
// closed when the tab is hidden or left (visibilitychange, pagehide) and reopened with the last
// event id, so a browser's six connections per host are never used up by background tabs.
"use strict";
(function () {
  var table = document.getElementById("events");
  // A window of an old part of the log (data-live="false") is history: no live tail there.
  if (!table || table.dataset.finished === "true" || table.dataset.live === "false" || !window.EventSource) {
    return;
  }
  var body = table.tBodies[0];
  var live = document.getElementById("live");
  var lastId = Number(table.dataset.lastId || "0");
  var source = null;
  var ended = false;

  function cell(row, text, cls) {
    var td = row.insertCell(-1);
    td.textContent = text;  // never innerHTML: messages are the package's output, not markup
    if (cls) { td.className = cls; }
  }

  function onLine(event) {
    var line = JSON.parse(event.data);
    if (line.id <= lastId) { return; }  // already shown (rendered by the server or sent before)
    lastId = line.id;
    var row = body.insertRow(-1);
    row.dataset.id = String(line.id);
    cell(row, line.time); cell(row, String(line.attempt)); cell(row, line.type);
    cell(row, line.source); cell(row, line.message, "msg");
  }

  function onEnd(event) {
    ended = true;
    close();
    var status = document.getElementById("status");
    if (status) { status.textContent = JSON.parse(event.data); }
    if (live) { live.textContent = "The execution has ended."; }
  }

  function open() {
    if (source || ended || document.visibilityState === "hidden") { return; }
    // A new EventSource cannot set Last-Event-ID itself; ?after= carries it. Its own automatic
    // reconnects send the header, and the server takes the larger of the two.
    source = new EventSource(table.dataset.stream + "?after=" + lastId);
    source.addEventListener("line", onLine);
    source.addEventListener("end", onEnd);
    source.onopen = function () { if (live) { live.textContent = "Live: new messages appear as they arrive."; } };
    source.onerror = function () {
      if (ended || !source) { return; }
      if (source.readyState === EventSource.CLOSED) {
        // The browser gave up (the session ended, or the answer was not a stream): say so.
        close();
        if (live) { live.textContent = "The live tail stopped: reload the page."; }
      } else if (live) {
        live.textContent = "Reconnecting...";
      }
    };
  }

  function close() {
    if (source) { source.close(); source = null; }
  }

  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "hidden") { close(); } else { open(); }
  });
  window.addEventListener("pagehide", close);
  window.addEventListener("pageshow", function (event) { if (event.persisted) { open(); } });
  open();
})();

// Following a master certificate rotation: while one is under way the Certificates page fetches its
// rotation section again every two seconds (the same HTML the server renders for
// /certificates/rotation) and puts it in place, so the workers are seen to accept the new certificate
// without a reload. Only while the tab is visible; never while a control of the section has focus
// (a half-ticked "Switch anyway" is not swept away); a form post reloads the page anyway.
(function () {
  var INTERVAL = 2000;
  var timer = null;

  function section() { return document.getElementById("rotation"); }

  function refresh() {
    timer = null;
    var current = section();
    if (!current || !current.dataset.follow) { return; }
    if (document.visibilityState === "hidden" || current.contains(document.activeElement)) {
      schedule();
      return;
    }
    fetch(current.dataset.follow, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (answer) { return answer.ok ? answer.text() : null; })
      .then(function (html) {
        if (html === null) { return; }
        // DOMParser builds an inert document: no script in it runs, nothing is fetched.
        var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("rotation");
        var now = section();
        if (fresh && now && !now.contains(document.activeElement)) {
          now.replaceWith(document.importNode(fresh, true));
        }
      })
      .catch(function () { /* the next round tries again */ })
      .then(schedule);
  }

  function schedule() {
    var current = section();
    if (timer === null && current && current.dataset.follow) { timer = window.setTimeout(refresh, INTERVAL); }
  }

  document.addEventListener("visibilitychange", schedule);
  schedule();
})();
