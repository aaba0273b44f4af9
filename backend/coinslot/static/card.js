/* The Coinslot card: runs on the backend's origin inside the publisher's iframe. It holds the
   reader's wallet (an HttpOnly cookie it never sees) and is the only place a payment starts:
   from a click in this document. It listens to no messages from the page at all. */
(() => {
  'use strict';
  const $ = (id) => document.getElementById(id);
  const cfg = JSON.parse($('coinslot-config').textContent);
  const t = cfg.texts;
  const root = document.documentElement;
  const buy = $('buy');
  const status = $('status');
  const balanceLine = $('balance');
  const topup = $('topup');
  const options = $('options');
  const voucher = $('voucher');
  const receipt = $('receipt');
  const inParent = window.parent !== window && cfg.origin;
  const state = {wallet: null, balance: 0, busy: false, polling: 0, popup: null, price: cfg.price};
  const money = new Intl.NumberFormat(cfg.lang, {style: 'currency', currency: cfg.currency || 'EUR',
    minimumFractionDigits: cfg.shown, maximumFractionDigits: cfg.shown});
  // Minor units per the server (ISO 4217), written as the language writes them: as the server does.
  const fmt = (minor) => money.format(minor / 10 ** cfg.digits);
  // Cards of one page (and other tabs on the same site) share the wallet: keep their balances in step.
  const channel = window.BroadcastChannel ? new BroadcastChannel('coinslot-wallet') : null;
  const fill = (text, vars) => text.replace(/\{(\w+)\}/g, (_, k) => vars[k]);

  // Only ever to the exact origin the backend checked against the site's origins.
  const post = (msg) => { if (inParent) window.parent.postMessage({coinslot: msg}, cfg.origin); };
  const warn = (message) => { console.warn('[coinslot]', message); post({type: 'error', message}); };

  // Clickjacking: a page could fade this card out or lay a decoy over it and have the reader press
  // "pay" unseen. Where the browser can tell (IntersectionObserver v2, Chromium), a press counts only
  // once the whole card has been visible, opaque and uncovered, for a moment, as browsers guard their
  // own permission prompts. Elsewhere the press counts, as before.
  const SEEN_MS = 500;
  let seenSince = window.IntersectionObserverEntry && 'isVisible' in IntersectionObserverEntry.prototype ? null : -Infinity;
  const seen = () => seenSince !== null && performance.now() - seenSince >= SEEN_MS;
  const watchVisibility = (target) => {
    if (seenSince !== null) return (root.dataset.seen = '');
    let timer;
    new IntersectionObserver((entries) => {
      const e = entries[entries.length - 1];
      seenSince = !e.isVisible ? null : seenSince === null ? performance.now() : seenSince;
      clearTimeout(timer);
      delete root.dataset.seen; // what is visible now, for the reader's tools (and tests) to wait on
      if (seenSince !== null) timer = setTimeout(() => (root.dataset.seen = ''), seenSince + SEEN_MS - performance.now());
    }, {trackVisibility: true, delay: 100}).observe(target);
  };

  const say = (text, kind) => {
    status.textContent = text || '';
    status.className = 'status' + (kind ? ' ' + kind : '');
  };

  const showBalance = (quiet) => {
    if (!quiet && channel && state.wallet) channel.postMessage({balance: state.balance});
    if (state.wallet) {
      balanceLine.textContent = state.balance < 0 && !state.frozen
        ? fill(t.owing, {amount: fmt(-state.balance)})
        : fill(t.balance, {amount: fmt(state.balance)});
    }
  };

  const setBusy = (busy) => {
    state.busy = busy;
    buy.disabled = busy;
    root.classList.toggle('busy', busy);
  };

  const call = async (method, path, body, headers) => {
    const init = {method, credentials: 'same-origin', cache: 'no-store', headers: headers || {}};
    if (body) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    const res = await fetch(path, init);
    let data = {};
    try { data = await res.json(); } catch (e) { /* an empty or non-JSON answer keeps {} */ }
    return {status: res.status, data};
  };

  const problem = (r) => String((r.data && r.data.type) || '').split('/').pop();

  const failed = (err) => {
    warn('request failed: ' + (err && err.message ? err.message : err));
    say(t.networkError, 'error');
    setBusy(false);
  };

  const unlocked = (data, again) => {
    state.balance = data.balance;
    state.wallet = true;
    showBalance();
    root.dataset.state = 'unlocked';
    buy.hidden = true;
    topup.hidden = true;
    receipt.textContent = again || !data.charged
      ? t.owned
      : fill(t.receipt, {amount: fmt(data.charged), title: cfg.title});
    say(again ? '' : t.unlocked, 'ok');
    setBusy(false);
    if (!again) {
      // The focused button just went away; keep keyboard focus in the card, on the receipt.
      receipt.tabIndex = -1;
      receipt.focus({preventScroll: true});
    }
    post({type: 'unlocked', item: cfg.item, token: data.token, content: data.content});
  };

  const load = async () => {
    const r = await call('GET', `/v1/card/${encodeURIComponent(cfg.site)}/${encodeURIComponent(cfg.item)}`);
    if (r.status !== 200) return warn('reader state: HTTP ' + r.status);
    state.wallet = r.data.wallet;
    state.balance = r.data.balance || 0;
    showBalance(true);
    if (r.data.owned && r.data.token) unlocked(r.data, true);
  };

  const ensureWallet = async () => {
    // Another card or tab may have made the wallet since this card rendered: never make a second one.
    if (!state.wallet) await load();
    if (state.wallet) return true;
    const r = await call('POST', '/v1/wallets', {currency: cfg.currency});
    if (r.status !== 201) {
      say(r.status === 429 ? t.tooMany : t.serviceError, 'error');
      warn('could not create a wallet: HTTP ' + r.status);
      return false;
    }
    state.wallet = true;
    state.balance = r.data.balance;
    showBalance();
    return true;
  };

  const unlock = async (retried) => {
    setBusy(true);
    say(t.working);
    if (!(await ensureWallet()) || root.dataset.state === 'unlocked') return setBusy(false);
    const r = await call('POST', '/v1/unlocks', {site: cfg.site, item: cfg.item, price: state.price});
    if (r.status === 200) return unlocked(r.data, false);
    setBusy(false);
    const kind = problem(r);
    if (r.status === 402) return needMoney(r.data, kind === 'wallet-frozen');
    if (r.status === 401 && !retried) {
      state.wallet = null; // the cookie's wallet is gone (or was recovered elsewhere): start a new one
      return unlock(true);
    }
    if (kind === 'price-changed') {
      state.price = r.data.price;
      buy.textContent = fill(t.unlockFor, {price: fmt(state.price)});
      return say(fill(t.priceChanged, {price: fmt(state.price)}), 'error');
    }
    if (r.status === 404) return say(t.unavailable, 'error');
    warn('unlock failed: HTTP ' + r.status + ' ' + kind);
    say(t.serviceError, 'error');
  };

  const needMoney = (data, frozen) => {
    state.frozen = frozen; // below zero after a refund: not a tab, so not shown as one
    state.balance = data.balance;
    showBalance();
    root.dataset.state = 'topup';
    options.replaceChildren(...(data.topup_options || []).map((opt) => {
      const b = document.createElement('button');
      b.type = 'button';
      b.className = 'option';
      b.textContent = fill(t.add, {amount: fmt(opt.amount)});
      b.addEventListener('click', () => startTopup(opt));
      return b;
    }));
    topup.hidden = false;
    const vars = {price: fmt(state.price), balance: fmt(data.balance)};
    say(fill(frozen ? t.frozen : data.balance < 0 ? t.tabFull : t.needMoney, vars));
    const first = options.querySelector('button');
    if (first) first.focus();
  };

  const startTopup = (opt) => {
    // Opened synchronously in the click, or the browser blocks the window.
    state.popup = window.open(opt.url, 'coinslot-topup', 'popup,width=480,height=720');
    if (!state.popup) {
      // Blocked, or opened without a handle (the page sends COOP: same-origin): the poll tells
      // which, as the top-up becomes known once a window has opened its link.
      const a = document.createElement('a');
      a.href = opt.url;
      a.target = '_blank';
      a.textContent = t.openCheckout;
      say(t.popupBlocked + ' ');
      status.append(a);
    } else {
      say(t.waiting);
    }
    poll(opt.topup_id, Date.now());
  };

  const poll = (id, started) => {
    const run = ++state.polling; // a newer top-up stops polling the older one
    const tick = async () => {
      if (run !== state.polling) return;
      let r;
      try { r = await call('GET', '/v1/topups/' + encodeURIComponent(id)); } catch (e) { r = {status: 0, data: {}}; }
      if (run !== state.polling) return;
      const s = r.status === 200 ? r.data.status : 'pending'; // 404 until the window has opened the checkout
      if (r.status === 200 && status.querySelector('a')) say(t.waiting); // a window did open after all
      if (s === 'paid') {
        state.polling++;
        if (state.popup && !state.popup.closed) state.popup.close();
        say(t.paid, 'ok');
        return unlock(false).catch(failed);
      }
      if (s === 'failed' || s === 'expired') {
        state.polling++;
        options.replaceChildren(); // their links are spent; the button fetches fresh ones
        return say(s === 'failed' ? t.topupFailed : t.topupExpired, 'error');
      }
      const age = Date.now() - started;
      if (r.data.awaiting_payment) {
        // A bank debit: paid at checkout, money due in days. Keep listening while the card is open.
        if (status.textContent !== t.onItsWay) say(t.onItsWay, 'ok');
        return setTimeout(tick, 5000);
      }
      // The backend says when a checkout has expired (a Stripe one lives an hour, and a reader may
      // pay late); only a link never opened (404) runs out here, with its 15 minutes.
      if (r.status === 404 && age > 16 * 60 * 1000) {
        state.polling++;
        options.replaceChildren();
        return say(t.topupExpired, 'error');
      }
      // Still pending with the window gone (closed by the reader, or cut off by a page or checkout that
      // sends Cross-Origin-Opener-Policy while the reader still pays): say so, but keep listening.
      if (state.popup && state.popup.closed && status.textContent === t.waiting) say(t.windowClosed);
      setTimeout(tick, age < 60000 ? 1000 : age < 600000 ? 4000 : 15000);
    };
    setTimeout(tick, 800);
  };

  const inView = () => {
    if (seen()) return true;
    say(t.notSeen, 'error');
    warn('press ignored: the card was not fully visible (covered, faded or just shown)');
    return false;
  };

  const redeem = async () => {
    const code = $('code').value.trim();
    if (!code || state.busy) return;
    setBusy(true);
    try {
      if (!(await ensureWallet())) return setBusy(false);
      const r = await call('POST', '/v1/vouchers/redeem', {code});
      setBusy(false);
      if (r.status === 200) {
        state.balance = r.data.balance;
        showBalance();
        say(fill(t.voucherAdded, {amount: fmt(r.data.credited)}), 'ok');
        return unlock(false);
      }
      say(r.status === 429 ? t.tooMany : t.voucherRefused, 'error');
      $('code').focus();
    } catch (e) { failed(e); }
  };

  if (cfg.accent) {
    // The publisher's accent, with the text colour the server chose for it (coinslot/widget.py).
    root.style.setProperty('--accent', cfg.accent);
    root.style.setProperty('--on-accent', cfg.onAccent);
  }

  const size = () => post({type: 'size', height: document.body.getBoundingClientRect().height});
  if (cfg.item) {
    buy.addEventListener('click', () => { if (!state.busy && inView()) unlock(false).catch(failed); });
    voucher.addEventListener('submit', (e) => {
      e.preventDefault();
      if (inView()) redeem(e).catch(failed);
    });
    watchVisibility($('card'));
    new ResizeObserver(size).observe(document.body);
    if (channel) {
      channel.onmessage = (e) => {
        if (typeof e.data.balance !== 'number') return;
        state.wallet = true;
        state.balance = e.data.balance;
        showBalance(true);
      };
    }
    post({type: 'ready'});
    load().catch((e) => warn('reader state unavailable: ' + e.message));
  } else {
    post({type: 'ready'});
    size();
    if (cfg.problem) warn(cfg.problem);
  }
  // Two frames after the first one has begun, the first is on screen even where the display runs a
  // frame behind: the page may now take away the placeholder it showed in this card's place. (Not
  // before: the box would flash empty. The page's own removal reaches the screen a frame later.)
  const frames = (n) => (n ? requestAnimationFrame(() => frames(n - 1)) : post({type: 'painted'}));
  frames(3);
})();
