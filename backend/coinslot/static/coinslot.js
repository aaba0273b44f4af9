/* Coinslot loader: a card (iframe on the backend's origin, which alone holds the wallet and
   pays) per [data-coinslot-item]; trusts only messages from that origin and its cards. */
(() => {
  'use strict';
  const script = document.currentScript;
  const warn = (...a) => console.warn('[coinslot]', ...a);
  if (!script || !script.src) return warn('load coinslot.js with <script src>');
  const api = new URL(script.src).origin;
  const {site = '', theme: th, accent: ac} = script.dataset;
  const de = /^de/i.test(script.dataset.lang || document.documentElement.lang);
  const theme = ['light', 'dark'].includes(th) ? th : 'auto';
  const cards = [];
  const handlers = {unlocked: [], error: []};

  const emit = (name, detail) => handlers[name].forEach((fn) => {
    try { fn(detail); } catch (e) { warn(e); }
  });

  const fail = (rec, why) => {
    if (rec.ok || !rec.frame.isConnected) return;
    warn(`no card for "${rec.item}" (${why}): is ${location.origin} an origin of ${site}?`);
    rec.frame.remove(); // not a browser error page
    const p = document.createElement('p');
    p.className = 'coinslot-unavailable';
    p.textContent = de ? 'Freischalten ist gerade nicht möglich.' : 'Unlocking is not available right now.';
    rec.el.append(p);
    emit('error', {item: rec.item, reason: why});
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
    const q = new URLSearchParams({origin: location.origin, lang: de ? 'de' : 'en', theme});
    if (/^#[0-9a-f]{6}$/i.test(ac)) q.set('accent', ac);
    frame.src = `${api}/embed/${encodeURIComponent(site)}/${encodeURIComponent(item)}?${q}`;
    frame.title = de ? 'Freischalten mit Coinslot' : 'Unlock with Coinslot';
    frame.style.cssText = 'display:block;width:100%;height:96px;border:0';
    const rec = el.coinslot = {el, item, frame};
    frame.onload = () => setTimeout(fail, 4000, rec, 'no answer');
    setTimeout(fail, 15000, rec, 'timed out');
    el.append(frame);
    cards.push(rec);
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
    if (m.type === 'ready') rec.ok = true;
    if (m.type === 'size' && m.height > 0) rec.frame.style.height = Math.min(Math.ceil(m.height), 4000) + 'px';
    if (m.type === 'error') {
      const reason = String(m.message);
      warn(reason);
      emit('error', {item: rec.item, reason});
    }
    if (m.type === 'unlocked') {
      if (typeof m.content === 'string' && !rec.box) {
        // Sanitized when stored; parsed inertly, nothing in it runs.
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

  // Calls queued before this loaded: (window.coinslot = window.coinslot || []).push(['on', 'unlocked', fn])
  const run = (call) => {
    try {
      if (typeof call === 'function') call(coinslot);
      else coinslot[call[0]](...call.slice(1));
    } catch (e) { warn('bad call', call, e); }
  };
  const coinslot = {
    on: (name, fn) => (handlers[name] && typeof fn === 'function' ? handlers[name].push(fn) : warn('no event', name)),
    push: run,
  };
  const queued = window.coinslot;
  window.coinslot = coinslot;
  if (Array.isArray(queued)) queued.forEach(run);

  if (!site) return warn('no data-site on the <script> tag');
  // Not waiting for DOMContentLoaded, which slow scripts can hold back for seconds.
  scan(document);
  new MutationObserver((list) => list.forEach((r) => {
    r.addedNodes.forEach(scan);
    if (r.previousSibling) scan(r.previousSibling);
  })).observe(document.documentElement, {childList: true, subtree: true});
  addEventListener('DOMContentLoaded', () => scan(document));
})();
