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
  const note = $('note');
  const passButton = $('pass');
  const undoLine = $('undo');
  const ask = $('confirm');
  const panel = $('panel');
  const opener = $('open');
  const inParent = window.parent !== window && cfg.origin;
  // budget: what one click may pay (minor units), until the card read tells the reader's own.
  const state = {wallet: null, balance: 0, busy: false, polling: 0, popup: null, price: cfg.price, budget: 100,
    cap: null, pass: cfg.site_pass || null, undo: null, topped: false, tab: 0};
  const money = new Intl.NumberFormat(cfg.lang, {style: 'currency', currency: cfg.currency || 'EUR',
    minimumFractionDigits: cfg.shown, maximumFractionDigits: cfg.shown});
  // Minor units per the server (ISO 4217), written as the language writes them: as the server does.
  const fmt = (minor) => money.format(minor / 10 ** cfg.digits);
  // Cards of one page (and other tabs on the same site) share the wallet: keep their balances in step.
  const channel = window.BroadcastChannel ? new BroadcastChannel('coinslot-wallet') : null;
  const fill = (text, vars) => text.replace(/\{(\w+)\}/g, (_, k) => vars[k]);
  const clock = new Intl.DateTimeFormat(cfg.lang, {hour: 'numeric', minute: '2-digit'});
  const dated = new Intl.DateTimeFormat(cfg.lang, {day: 'numeric', month: 'short', hour: 'numeric', minute: '2-digit'});
  // On the reader's clock: "18:40" today, with the date on any other day.
  const at = (ms) => (new Date(ms).toDateString() === new Date().toDateString() ? clock : dated).format(ms);

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

  const sayIn = (el) => (text, kind) => {
    el.textContent = text || '';
    el.className = 'status' + (kind ? ' ' + kind : '');
  };
  const say = sayIn(status);
  const tell = sayIn($('panel-status')); // the card's own line is out of sight while the panel is open

  const showBalance = (quiet, sync) => {
    if (!quiet && channel && state.wallet) channel.postMessage({balance: state.balance, sync});
    if (state.wallet) {
      balanceLine.textContent = state.balance < 0 && !state.frozen
        ? fill(t.owing, {amount: fmt(-state.balance)})
        : fill(t.balance, {amount: fmt(state.balance)});
    }
  };

  const setBusy = (busy) => {
    state.busy = busy;
    buy.disabled = passButton.disabled = busy;
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

  // What the next unlock of this item (or the pass) would take: the cap may make it less, never a pass.
  const charge = (pass) => {
    const price = pass ? state.pass.price : state.price;
    const c = state.cap;
    return !c || pass ? price : c.free_now ? 0 : Math.min(price, Math.max(0, c.daily_cap - c.spent_today));
  };
  const passWords = (p) => fill(p.pass_hours > 24 ? t.passDays : t.passToday,
    {price: fmt(p.price), days: Math.ceil(p.pass_hours / 24)});

  // The offer: the item's price, the site's pass beside it, or "free" once the reader reached the cap.
  const offer = () => {
    const free = !!(state.cap && state.cap.free_now);
    const pass = state.pass && state.pass.item !== cfg.item && !free ? state.pass : null;
    const words = state.price == null ? t.unlock : fill(pass ? t.thisItem : t.unlockFor, {price: fmt(state.price)});
    buy.textContent = free ? t.unlockFree : words;
    passButton.hidden = !pass;
    if (pass) passButton.textContent = passWords(pass);
    note.textContent = free ? fill(t.capFree, {cap: fmt(state.cap.daily_cap)}) : '';
    if (cfg.archived) { buy.disabled = true; note.textContent = t['item-archived']; } // who bought it still reads it
  };

  // "Paid €0.19 · Undo (9 min left)" while the reader may still take it back; gone when time is up.
  let undoTimer = 0;
  const showUndo = () => {
    const u = state.undo;
    const left = u ? Math.ceil((u.until - Date.now()) / 60000) : 0;
    clearTimeout(undoTimer);
    undoLine.hidden = left <= 0 || root.dataset.state !== 'unlocked';
    if (undoLine.hidden) return;
    undoLine.firstChild.textContent = fill(t.paidUndo, {amount: fmt(u.price)});
    undoLine.lastChild.textContent = fill(t.undo, {minutes: left});
    undoTimer = setTimeout(showUndo, (u.until - Date.now()) % 60000 + 50);
  };

  const unlocked = (data, fresh) => {
    state.balance = data.balance;
    state.wallet = true;
    showBalance(!fresh); // a re-read tells the other cards nothing new (and must not set them re-reading)
    const first = root.dataset.state !== 'unlocked';
    root.dataset.state = 'unlocked';
    buy.hidden = passButton.hidden = topup.hidden = ask.hidden = true;
    note.textContent = '';
    if (data.undo !== undefined) state.undo = data.undo;
    // A re-read of what is already open keeps its receipt, unless a pass or the cap now covers it.
    if (first || fresh || data.access === 'pass' || data.access === 'cap') {
      receipt.textContent = data.access === 'pass' && data.access_until
        ? fill(t.inPass, {time: at(data.access_until)})
        : data.access === 'cap' ? t.capOpen
          : !fresh || !data.charged ? t.owned : fill(t.receipt, {amount: fmt(data.charged), title: cfg.title});
    }
    showUndo();
    if (fresh) {
      say(t.unlocked, 'ok');
      // The focused button just went away; keep keyboard focus in the card, on the receipt.
      receipt.tabIndex = -1;
      receipt.focus({preventScroll: true});
    }
    setBusy(false);
    if (first) post({type: 'unlocked', item: cfg.item, token: data.token, content: data.content});
    if (fresh && state.topped) offerRecovery().catch(() => {});
  };

  // Undone here or elsewhere (or a pass ended): the content goes and the price is back.
  const relocked = () => {
    const focused = document.activeElement && document.activeElement !== document.body;
    root.dataset.state = 'offer';
    buy.hidden = false;
    receipt.textContent = '';
    state.undo = null;
    showUndo();
    offer();
    post({type: 'locked', item: cfg.item});
    if (focused && panel.hidden) buy.focus();
  };

  // view: the page view's first read, which the publisher's dashboard counts as the card shown.
  // variant: a price test's, drawn by the first read for a reader without a wallet and kept for the page view.
  const load = async (view) => {
    const query = view ? '?view=1' : state.variant ? '?variant=' + state.variant : '';
    const r = await call('GET', `/v1/card/${encodeURIComponent(cfg.site)}/${encodeURIComponent(cfg.item)}${query}`);
    if (r.status !== 200) return warn('reader state: HTTP ' + r.status);
    const d = r.data;
    if (d.price != null) state.price = d.price;
    state.variant = d.variant || null;
    state.wallet = d.wallet;
    state.balance = d.balance || 0;
    state.budget = d.budget == null ? state.budget : d.budget;
    state.tab = d.tab_limit || 0;
    state.cap = d.cap || null;
    if (d.site_pass !== undefined) state.pass = d.site_pass;
    showBalance(true);
    if (d.owned && d.token) unlocked(d, false);
    else if (root.dataset.state === 'unlocked') relocked();
    else offer();
  };

  const ensureWallet = async () => {
    // Another card or tab may have made the wallet since this card rendered: never make a second one.
    if (!state.wallet) await load();
    if (state.wallet) return true;
    const made = {currency: cfg.currency};
    if (state.variant) Object.assign(made, {site: cfg.site, variant: state.variant}); // the price just shown
    const r = await call('POST', '/v1/wallets', made);
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

  // pass: buy the site's pass instead of the item. sure: the reader already agreed to this amount
  // (above the one-click budget, or by topping up for it).
  const unlock = async (pass, sure, retried) => {
    setBusy(true);
    say(t.working);
    if (!(await ensureWallet()) || root.dataset.state === 'unlocked') return setBusy(false);
    if (state.price == null) await load(); // under a price test the price comes only with the reader's read
    if (state.price == null) return say(t.networkError, 'error'), setBusy(false);
    const cost = charge(pass);
    // Above the budget, a click that would pay asks once more; one that cannot pay (not even on the
    // site's tab) leads to a top-up instead, which is the reader's own say-so.
    if (!sure && cost > state.budget && state.balance - cost >= -state.tab) return confirmPay(pass, cost);
    const price = pass ? state.pass.price : state.price;
    const r = await call('POST', '/v1/unlocks', {site: cfg.site, item: pass ? state.pass.item : cfg.item, price});
    if (r.status === 200) return pass ? passBought(r.data) : unlocked(r.data, true);
    setBusy(false);
    const kind = problem(r);
    // The wallet's own daily limit: more money would not help, so no top-up is offered.
    if (kind === 'wallet-daily-limit') return say(fill(t.dailyLimit, {limit: fmt(r.data.daily_limit)}), 'error');
    if (r.status === 402) return needMoney(r.data, kind === 'wallet-frozen', pass);
    if (r.status === 401 && !retried) {
      state.wallet = null; // the cookie's wallet is gone (or was recovered elsewhere): start a new one
      return unlock(pass, sure, true);
    }
    if (kind === 'price-changed') {
      if (pass) state.pass.price = r.data.price;
      else state.price = r.data.price;
      offer();
      return say(fill(t.priceChanged, {price: fmt(r.data.price)}), 'error');
    }
    if (r.status === 404 || r.status === 410) return say(t[kind] || t.unavailable, 'error');
    if (r.status === 429) return say(t.tooMany, 'error');
    warn('unlock failed: HTTP ' + r.status + ' ' + kind);
    say(t.serviceError, 'error');
  };

  // The pass opens every item of the site: this card reads its item again, the page's other cards too.
  // (No Undo for it here: reading under a pass uses it, and a used pass cannot be undone.)
  const passBought = async (data) => {
    state.balance = data.balance;
    showBalance(false, true);
    await load();
    if (root.dataset.state === 'unlocked') {
      say(t.unlocked, 'ok');
      receipt.tabIndex = -1;
      receipt.focus({preventScroll: true});
    }
    setBusy(false);
  };

  const confirmPay = (pass, cost) => {
    setBusy(false);
    say(fill(t.overBudget, {price: fmt(cost), budget: fmt(state.budget)}));
    const yes = $('yes');
    yes.textContent = fill(t.pay, {price: fmt(cost)});
    yes.onclick = () => {
      if (state.busy || !inView()) return;
      ask.hidden = true;
      unlock(pass, true).catch(failed);
    };
    ask.hidden = false;
    yes.focus();
  };

  const needMoney = (data, frozen, pass) => {
    state.frozen = frozen; // below zero after a refund: not a tab, so not shown as one
    state.balance = data.balance;
    showBalance();
    root.dataset.state = 'topup';
    options.replaceChildren(...(data.topup_options || []).map((opt) => {
      const b = document.createElement('button');
      b.type = 'button';
      b.className = 'option';
      b.textContent = fill(t.add, {amount: fmt(opt.amount)});
      b.addEventListener('click', () => startTopup(opt, pass));
      return b;
    }));
    topup.hidden = false;
    state.after = pass; // what the money is for: the voucher path finishes the same unlock
    const vars = {price: fmt(data.price || charge(pass)), balance: fmt(data.balance)};
    say(fill(frozen ? t.frozen : data.balance < 0 ? t.tabFull : t.needMoney, vars));
    const first = options.querySelector('button');
    if (first) first.focus();
  };

  const startTopup = (opt, pass) => {
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
    poll(opt.topup_id, Date.now(), pass);
  };

  const poll = (id, started, pass) => {
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
        state.topped = true;
        if (state.popup && !state.popup.closed) state.popup.close();
        say(t.paid, 'ok');
        return unlock(pass, true).catch(failed);
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
    (panel.hidden ? say : tell)(t.notSeen, 'error');
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
        return unlock(state.after, true);
      }
      say(r.status === 429 ? t.tooMany : t.voucherRefused, 'error');
      $('code').focus();
    } catch (e) { failed(e); }
  };

  // Undo: the money goes back, and every card the purchase opened (a pass opens many) reads again.
  const refund = async (id, speak) => {
    const r = await call('POST', `/v1/purchases/${encodeURIComponent(id)}/refund`);
    if (r.status !== 200) {
      if (!t[problem(r)]) warn('undo failed: HTTP ' + r.status + ' ' + problem(r));
      return speak(t[problem(r)] || t.serviceError, 'error');
    }
    state.balance = r.data.balance;
    showBalance(false, true);
    await load();
    speak(fill(t.undone, {amount: fmt(r.data.refunded)}), 'ok');
  };

  // The wallet panel ------------------------------------------------------------------------------

  // The one-click budget is typed in major units ("1.50", "1,50"), kept in minor units: no floats.
  const toMinor = (text) => {
    const m = /^\s*(\d{1,7})(?:[.,](\d*))?\s*$/.exec(text);
    if (!m || (m[2] || '').length > cfg.digits) return null;
    return Number(m[1]) * 10 ** cfg.digits + Number((m[2] || '').padEnd(cfg.digits, '0') || 0);
  };
  const plain = (minor) => new Intl.NumberFormat(cfg.lang, {minimumFractionDigits: cfg.digits, useGrouping: false})
    .format(minor / 10 ** cfg.digits);

  const receiptItem = (p) => {
    const li = document.createElement('li');
    const what = document.createElement('span');
    const line = document.createElement('span');
    what.textContent = p.title || p.item;
    line.className = 'meta';
    li.append(what);
    if (!p.at) return li; // "Nothing bought yet."
    const words = [p.charged < p.price ? fill(t.chargedOf, {charged: fmt(p.charged), price: fmt(p.price)}) : fmt(p.price),
      at(p.at)];
    if (p.site !== cfg.site) words.push(p.site_name || p.site);
    if (p.expires_at && !p.refunded_at) words.push(fill(t.passUntil, {time: at(p.expires_at)}));
    if (p.refunded_at) words.push(t.refunded);
    line.textContent = words.join(' · ');
    li.append(line);
    if (p.refunded_at) li.className = 'refunded';
    if (p.undo_until > Date.now() && !p.refunded_at) {
      const b = document.createElement('button');
      b.type = 'button';
      b.className = 'link';
      b.textContent = fill(t.undo, {minutes: Math.ceil((p.undo_until - Date.now()) / 60000)});
      b.onclick = () => refund(p.id, tell).then(fillPanel).catch(() => tell(t.networkError, 'error'));
      li.append(' ', b);
    }
    return li;
  };

  const fillPanel = async () => {
    const r = state.wallet ? await call('GET', '/v1/wallet') : {status: 401};
    const w = r.status === 200 ? r.data : null;
    if (r.status === 401) state.wallet = false;
    else if (!w) tell(t.serviceError, 'error');
    $('held').hidden = !w;
    // Restoring replaces the wallet in this browser: offered where there is nothing to lose.
    $('restore').hidden = !!(w && (w.balance || w.purchases.length));
    $('total').textContent = w ? fill(t.balance, {amount: fmt(w.balance)}) : t.noWallet;
    if (!w) return;
    state.balance = w.balance;
    state.budget = w.budget == null ? state.budget : w.budget;
    showBalance(true);
    const list = w.purchases.slice(0, 20).map(receiptItem);
    $('receipts').replaceChildren(...(list.length ? list : [receiptItem({title: t.noReceipts})]));
    const budget = $('budget');
    if (document.activeElement !== budget) budget.value = plain(state.budget);
    $('recovery-text').textContent = w.recovery_code ? t.codeSaved : t.codeNone;
    $('make-code').textContent = w.recovery_code ? t.newCode : t.saveCode;
  };

  const openPanel = () => {
    panel.hidden = false;
    root.dataset.panel = '';
    opener.setAttribute('aria-expanded', 'true');
    $('panel-title').focus();
    return fillPanel();
  };

  const closePanel = () => {
    panel.hidden = true;
    delete root.dataset.panel;
    opener.setAttribute('aria-expanded', 'false');
    $('code-box').hidden = true; // a recovery code is shown once, not left lying around
    $('code-out').value = '';
    tell('');
    opener.focus();
  };

  const saveBudget = async () => {
    const input = $('budget');
    const budget = toMinor(input.value);
    if (budget === null || budget > 100000) {
      input.setAttribute('aria-invalid', 'true');
      input.focus();
      return tell(fill(t.budgetInvalid, {min: fmt(0), max: fmt(100000), example: plain(100)}), 'error');
    }
    input.removeAttribute('aria-invalid');
    const r = await call('PATCH', '/v1/wallet', {budget});
    if (r.status !== 200) return tell(t[problem(r)] || t.serviceError, 'error');
    state.budget = r.data.budget;
    input.value = plain(state.budget);
    tell(fill(t.budgetSaved, {amount: fmt(state.budget)}), 'ok');
  };

  const makeCode = async () => {
    const r = await call('POST', '/v1/wallet/recovery-code');
    if (r.status !== 201) return tell(t[problem(r)] || t.serviceError, 'error');
    $('code-box').hidden = false;
    $('code-out').value = r.data.code;
    $('code-out').focus();
    $('code-out').select();
    $('recovery-text').textContent = t.codeSaved;
    $('make-code').textContent = t.newCode;
    $('hint').hidden = true;
  };

  const copyCode = async () => {
    const out = $('code-out');
    try {
      await navigator.clipboard.writeText(out.value);
    } catch (e) {
      // A cross-site frame may not write the clipboard (Permissions Policy): copy the selection instead.
      out.select();
      if (!document.execCommand('copy')) return;
    }
    tell(t.copied, 'ok');
  };

  const restore = async () => {
    const code = $('restore-code').value.trim();
    if (!code) return;
    const r = await call('POST', '/v1/wallets/recover', {code});
    if (r.status !== 200) {
      $('restore-code').focus();
      return tell(t[problem(r)] || t.serviceError, 'error');
    }
    $('restore-code').value = '';
    state.balance = r.data.balance;
    state.wallet = true;
    showBalance(false, true);
    await load(); // what the restored wallet owns opens, with no charge
    await fillPanel();
    tell(fill(t.restored, {amount: fmt(r.data.balance)}), 'ok');
  };

  // After the first top-up, the card suggests a recovery code (unless the wallet has one).
  const offerRecovery = async () => {
    state.topped = false;
    const r = await call('GET', '/v1/wallet');
    $('hint').hidden = r.status !== 200 || r.data.recovery_code !== false;
  };

  if (cfg.accent) {
    // The publisher's accent, with the text colour the server chose for it (coinslot/widget.py).
    root.style.setProperty('--accent', cfg.accent);
    root.style.setProperty('--on-accent', cfg.onAccent);
  }

  const size = () => post({type: 'size', height: document.body.getBoundingClientRect().height});
  const guarded = (fn) => (e) => {
    if (e) e.preventDefault();
    if (!state.busy && inView()) fn().catch(failed);
  };
  const quiet = (fn) => (e) => {
    if (e) e.preventDefault();
    fn().catch(() => tell(t.networkError, 'error'));
  };
  if (cfg.item) {
    offer();
    buy.addEventListener('click', guarded(() => unlock(false)));
    passButton.addEventListener('click', guarded(() => unlock(true)));
    $('no').addEventListener('click', () => {
      ask.hidden = true;
      say('');
      buy.focus();
    });
    $('undo-button').addEventListener('click', () => {
      if (state.undo) refund(state.undo.purchase_id, say).catch(failed);
    });
    voucher.addEventListener('submit', guarded(redeem));
    opener.addEventListener('click', quiet(openPanel));
    $('hint-button').addEventListener('click', quiet(() => openPanel().then(makeCode)));
    $('close').addEventListener('click', closePanel);
    panel.addEventListener('keydown', (e) => { if (e.key === 'Escape') closePanel(); });
    $('limit').addEventListener('submit', guarded(saveBudget));
    $('make-code').addEventListener('click', quiet(makeCode));
    $('copy').addEventListener('click', quiet(copyCode));
    $('restore').addEventListener('submit', quiet(restore));
    watchVisibility($('card'));
    new ResizeObserver(size).observe(document.body);
    if (channel) {
      channel.onmessage = (e) => {
        if (typeof e.data.balance !== 'number') return;
        const known = state.wallet;
        state.wallet = true;
        state.balance = e.data.balance;
        showBalance(true);
        // A pass, a refund, a restored wallet or the cap may change what this card may open, or whether
        // its Undo still stands; and a card that read before there was a wallet knows no cap or budget.
        if (e.data.sync || state.cap || state.undo || !known) load().catch((err) => warn('reader state unavailable: ' + err.message));
      };
    }
    post({type: 'ready'});
    load(true).catch((e) => warn('reader state unavailable: ' + e.message));
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
