/* Coinslot loader: one card (an iframe on the backend's origin, where the wallet and every
   payment stay) per [data-coinslot-item]. Trusts only messages from the backend's origin
   whose source is one of its own cards. */
(() => {
  'use strict';
  const script = document.currentScript;
  const warn = (...a) => console.warn('[coinslot]', ...a);
  if (!script || !script.src) return warn('load coinslot.js with <script src>');
  const api = new URL(script.src).origin;
  const {site = '', theme: th, accent: ac} = script.dataset;
  const de = /^de/i.test(script.dataset.lang || document.documentElement.lang);
  const theme = ['light', 'dark'].includes(th) ? th : 'auto';
  const cards = new Map(); // card window -> record
  const handlers = {unlocked: [], error: []};

  const emit = (name, detail) => handlers[name].forEach((fn) => {
    try { fn(detail); } catch (e) { warn(e); }
  });

  const fail = (rec, why) => {
    if (rec.ok || !rec.frame.isConnected) return;
    warn(`card for "${rec.item}" did not load (${why}); is ${location.origin} an origin of ${site}?`);
    rec.frame.remove(); // a browser error page in the publisher's layout helps nobody
    const p = document.createElement('p');
    p.className = 'coinslot-unavailable';
    p.textContent = de ? 'Freischalten ist gerade nicht möglich.' : 'Unlocking is not available right now.';
    rec.el.append(p);
    emit('error', {item: rec.item, reason: why});
  };

  const place = (el) => {
    if (el.coinslot) return;
    const item = el.dataset.coinslotItem;
    const frame = document.createElement('iframe');
    const q = new URLSearchParams({origin: location.origin, lang: de ? 'de' : 'en', theme});
    if (/^#[0-9a-f]{6}$/i.test(ac)) q.set('accent', ac);
    frame.src = `${api}/embed/${encodeURIComponent(site)}/${encodeURIComponent(item)}?${q}`;
    frame.title = de ? 'Freischalten mit Coinslot' : 'Unlock with Coinslot';
    frame.style.cssText = 'display:block;width:100%;height:96px;border:0';
    const rec = el.coinslot = {el, item, frame};
    frame.onload = () => setTimeout(fail, 4000, rec, 'no answer');
    setTimeout(fail, 15000, rec, 'timed out');
    el.append(frame);
    cards.set(frame.contentWindow, rec);
  };

  const scan = (root) => {
    if (root.matches && root.matches('[data-coinslot-item]')) place(root);
    if (root.querySelectorAll) root.querySelectorAll('[data-coinslot-item]').forEach(place);
  };

  addEventListener('message', (event) => {
    const rec = event.origin === api && cards.get(event.source);
    const m = event.data && event.data.coinslot;
    if (!rec || !m || rec.frame.contentWindow !== event.source) return;
    if (m.type === 'ready') rec.ok = true;
    if (m.type === 'size' && m.height > 0) rec.frame.style.height = Math.min(Math.ceil(m.height), 4000) + 'px';
    if (m.type === 'error') {
      warn(String(m.message));
      emit('error', {item: rec.item, reason: String(m.message)});
    }
    if (m.type === 'unlocked') {
      if (typeof m.content === 'string' && !rec.box) {
        // Sanitized when the publisher stored it; parsed inertly, so nothing in it runs.
        rec.box = document.createElement('div');
        rec.box.className = 'coinslot-content';
        rec.box.append(...new DOMParser().parseFromString(m.content, 'text/html').body.childNodes);
        rec.el.insertBefore(rec.box, rec.frame);
      }
      const detail = {item: rec.item, token: String(m.token)};
      rec.el.dispatchEvent(new CustomEvent('coinslot:unlocked', {bubbles: true, detail}));
      emit('unlocked', detail);
    }
  });

  // Calls queued before this file loaded: (window.coinslot = window.coinslot || []).push(['on', 'unlocked', fn])
  const run = (call) => {
    try {
      if (typeof call === 'function') call(coinslot);
      else coinslot[call[0]](...call.slice(1));
    } catch (e) { warn('bad call', call, e); }
  };
  const coinslot = {
    on: (name, fn) => (handlers[name] && typeof fn === 'function' ? handlers[name].push(fn) : warn('no event', name)),
    scan: () => scan(document),
    push: run,
  };
  const queued = window.coinslot;
  window.coinslot = coinslot;
  if (Array.isArray(queued)) queued.forEach(run);

  if (!site) return warn('data-site is missing on the coinslot.js <script> tag');
  const start = () => {
    scan(document);
    new MutationObserver((list) => list.forEach((r) => r.addedNodes.forEach(scan)))
      .observe(document.documentElement, {childList: true, subtree: true});
  };
  if (document.readyState === 'loading') addEventListener('DOMContentLoaded', start);
  else start();
})();
