/* Coinslot loader: a card (iframe on the backend's origin, which alone holds the wallet and
   pays) per [data-coinslot-item]; trusts only messages from that origin and its cards. */
(() => {
  'use strict';
  const script = document.currentScript;
  const warn = (...a) => console.warn('[coinslot]', ...a);
  if (!script || !script.src) return warn('needs <script src>');
  const api = new URL(script.src).origin;
  const {site = '', theme: th, accent: ac} = script.dataset;
  const de = /^de/i.test(script.dataset.lang || document.documentElement.lang);
  const theme = ['light', 'dark'].includes(th) ? th : 'auto';
  // How the card looks, for the card and for its placeholder alike.
  const look = {lang: de ? 'de' : 'en', theme};
  if (/^#[0-9a-f]{6}$/i.test(ac)) look.accent = ac;
  const cards = [];
  let wanted = [];
  const handlers = {locked: [], unlocked: [], error: []};

  // coinslot:unlocked {item, token}, coinslot:locked {item}, coinslot:error {item, reason}: on the
  // element, and to the functions given to coinslot.on.
  const signal = (rec, type, detail) => {
    detail.item = rec.item;
    rec.el.dispatchEvent(new CustomEvent('coinslot:' + type, {bubbles: true, detail}));
    handlers[type].forEach((fn) => {
      try { fn(detail); } catch (e) { warn(e); }
    });
  };

  const fail = (rec, why) => {
    if (rec.ok || !rec.frame.isConnected) return;
    warn(`no card for "${rec.item}" (${why}): may ${location.origin} embed ${site}?`);
    rec.slot.remove(); // the frame and any placeholder: not a browser error page
    const p = document.createElement('p');
    p.className = 'coinslot-unavailable';
    p.textContent = de ? 'Freischalten ist gerade nicht möglich.' : 'Unlocking is not available right now.';
    rec.el.append(p);
    signal(rec, 'error', {reason: why});
  };

  // The card's frame needs a new renderer process (it is another site), so meanwhile the page
  // shows each item's title and price in the card's words and look, from the backend's public
  // placeholders: inert (no button, no focus, hidden from assistive tech) and above the frame
  // until the card says it is ready. Only the card can pay. Shadow root and constructed
  // stylesheet: no inline style, fine under a strict CSP.
  const drop = (rec) => rec.ph && rec.ph.remove();
  const draw = (rec, o, sheet) => {
    if (rec.ok || rec.ph) return;
    const ph = rec.ph = document.createElement('div');
    const t = document.createElement('span');
    const b = document.createElement('span');
    ph.className = 'coinslot-placeholder';
    ph.setAttribute('aria-hidden', 'true');
    const root = ph.attachShadow({mode: 'open'});
    root.adoptedStyleSheets = [sheet];
    t.textContent = o.title;
    b.textContent = o.text;
    root.append(t, b);
    rec.slot.append(ph);
  };

  // One request for the items found together; public and cacheable, never with the reader's cookie.
  const ask = () => {
    const recs = wanted.splice(0, 50); // the most one request may name
    if (wanted.length) ask();
    const q = new URLSearchParams({...look, items: recs.map((r) => r.item)});
    fetch(`${api}/placeholders/${encodeURIComponent(site)}?${q}`, {credentials: 'omit'})
      .then((r) => r.json())
      .then((d) => {
        const sheet = new CSSStyleSheet();
        sheet.replaceSync(d.css);
        d.items.forEach((o) => recs.forEach((rec) => rec.item === o.item && draw(rec, o, sheet)));
      })
      .catch(() => {}) // refused by the page's CSP, or offline: the card comes as it would anyway
      .finally(() => setTimeout(() => recs.forEach((r) => r.go()), 20)); // a frame for it to be painted
  };

  const place = (el) => {
    // While parsing, only finished elements.
    if (el.coinslot || (document.readyState === 'loading' && !el.nextSibling)) return;
    const item = el.dataset.coinslotItem;
    if (!item) {
      el.coinslot = 1;
      return warn('empty data-coinslot-item', el);
    }
    const frame = document.createElement('iframe');
    const q = new URLSearchParams({origin: location.origin, ...look});
    frame.src = `${api}/embed/${encodeURIComponent(site)}/${encodeURIComponent(item)}?${q}`;
    frame.title = de ? 'Freischalten mit Coinslot' : 'Unlock with Coinslot';
    frame.style.cssText = 'grid-area:1/1;width:100%;height:96px;border:0';
    // Frame and placeholder share one grid cell, so swapping them moves nothing.
    const slot = document.createElement('div');
    slot.className = 'coinslot-card';
    slot.style.display = 'grid';
    // The frame goes in once the placeholder is on screen, or its data failed or is slow: a
    // cross-site frame starting meanwhile holds the page's own rendering back by tens of ms.
    const go = () => frame.isConnected || slot.prepend(frame);
    const rec = el.coinslot = {el, item, frame, slot, go};
    setTimeout(go, 300);
    frame.onload = () => setTimeout(fail, 4000, rec, 'no answer');
    setTimeout(fail, 15000, rec, 'timed out');
    el.append(slot);
    cards.push(rec);
    if (wanted.push(rec) === 1) queueMicrotask(ask);
  };

  const scan = (root) => {
    if (root.matches && root.matches('[data-coinslot-item]')) place(root);
    if (root.querySelectorAll) root.querySelectorAll('[data-coinslot-item]').forEach(place);
  };

  addEventListener('message', (event) => {
    // Its window now: a frame moved in the DOM gets a new one.
    const rec = event.origin === api && cards.find((r) => r.frame.contentWindow === event.source);
    const m = event.data && event.data.coinslot;
    if (!rec || !m) return;
    const {type} = m;
    const detail = {};
    // The placeholder goes once the card is on screen (or, should that never be said, soon after ready).
    if (type === 'ready') rec.ok = setTimeout(drop, 1000, rec); // a timer's id is never 0
    if (type === 'painted') drop(rec);
    if (type === 'size' && m.height > 0) rec.frame.style.height = Math.min(Math.ceil(m.height), 4000) + 'px';
    if (type === 'error') warn(detail.reason = String(m.message));
    // Locked again: the reader undid the purchase (or a pass ended), so what it opened goes.
    if (type === 'locked' && rec.box) rec.box = rec.box.remove();
    if (type === 'unlocked') detail.token = String(m.token);
    if (type === 'unlocked' && m.content && !rec.box) {
      // Sanitized when stored; parsed inertly, nothing in it runs.
      rec.box = document.createElement('div');
      rec.box.className = 'coinslot-content';
      rec.box.append(...new DOMParser().parseFromString(m.content, 'text/html').body.childNodes);
      rec.el.insertBefore(rec.box, rec.slot);
    }
    if (handlers[type]) signal(rec, type, detail);
  });

  // Calls queued before this loaded: (window.coinslot = window.coinslot || []).push(['on', 'unlocked', fn])
  const run = (call) => {
    try {
      if (typeof call === 'function') call(coinslot);
      else coinslot[call[0]](...call.slice(1));
    } catch (e) { warn('bad call', call, e); }
  };
  const coinslot = {
    // Not a function? Calling it fails inside signal's try, with a warning, as any throwing handler.
    on: (name, fn) => (handlers[name] ? handlers[name].push(fn) : warn('no event', name)),
    push: run,
  };
  const queued = window.coinslot;
  window.coinslot = coinslot;
  if (Array.isArray(queued)) queued.forEach(run);

  if (!site) return warn('no data-site');
  // Not waiting for DOMContentLoaded, which slow scripts can hold back for seconds.
  scan(document);
  new MutationObserver((list) => list.forEach((r) => {
    r.addedNodes.forEach(scan);
    if (r.previousSibling) scan(r.previousSibling);
  })).observe(document.documentElement, {childList: true, subtree: true});
  addEventListener('DOMContentLoaded', () => scan(document));
})();
