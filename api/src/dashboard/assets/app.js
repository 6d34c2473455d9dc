// compute-ledger dashboard. Plain script, no dependencies, served from the binary.
// Reads the JSON routes of the API with the user's bearer token and follows /v1/stream.
// Amounts stay decimal strings from the server: they are only regrouped for display,
// never parsed into floating point numbers.
'use strict';

const TOKEN_KEY = 'cledger-token';
const EVENTS_KEPT = 200;

const state = {
  token: sessionStorage.getItem(TOKEN_KEY) || '',
  canFinance: false,
  canAudit: false,
  asOf: null,
  head: null,
  events: [],
  streaming: false,
  refreshTimer: null,
  renderSerial: 0,
};

class HttpError extends Error {
  constructor(status, body) {
    super((body && body.error && body.error.message) || ('HTTP ' + status));
    this.status = status;
    this.code = body && body.error && body.error.code;
  }
}

function headers(extra) {
  const h = Object.assign({ Accept: 'application/json' }, extra || {});
  if (state.token) h.Authorization = 'Bearer ' + state.token;
  return h;
}

async function getJson(path) {
  const r = await fetch(path, { headers: headers() });
  const body = await r.json().catch(() => null);
  if (!r.ok) throw new HttpError(r.status, body);
  return body;
}

async function getText(path) {
  const r = await fetch(path, { headers: headers({ Accept: '*/*' }) });
  if (!r.ok) throw new HttpError(r.status, await r.json().catch(() => null));
  return r.text();
}

// ---- formatting ------------------------------------------------------------------------

/** "-1234567.89" -> "-1,234,567.89": string work only, exact for any amount. */
function groupThousands(decimal) {
  const negative = decimal.startsWith('-');
  const body = negative ? decimal.slice(1) : decimal;
  const [whole, fraction] = body.split('.');
  let grouped = '';
  for (let i = 0; i < whole.length; i++) {
    if (i > 0 && (whole.length - i) % 3 === 0) grouped += ',';
    grouped += whole[i];
  }
  return (negative ? '-' : '') + grouped + (fraction !== undefined ? '.' + fraction : '');
}

function money(amount, currency) {
  return currency + ' ' + groupThousands(amount);
}

function todayUtc() {
  return new Date().toISOString().slice(0, 10);
}

/** The last day of the quarter before the one holding `date` (YYYY-MM-DD). */
function previousQuarterEnd(date) {
  const [y, m] = date.split('-').map(Number);
  const q = Math.floor((m - 1) / 3);
  if (q === 0) return (y - 1) + '-12-31';
  const month = q * 3;
  const last = new Date(Date.UTC(y, month, 0)).getUTCDate();
  return y + '-' + String(month).padStart(2, '0') + '-' + String(last).padStart(2, '0');
}

// ---- DOM -------------------------------------------------------------------------------

/** el('td', {class: 'amount'}, 'text', childNode, ...): text is always text, never HTML. */
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    node.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function amountCell(amount, currency, field) {
  return el('td', { class: 'amount', 'data-field': field }, money(amount, currency));
}

function table(columns, rows, footer) {
  const head = el('thead', {}, el('tr', {}, columns.map((c) => el('th', { class: c.amount ? 'amount' : null }, c.label))));
  const body = el('tbody', {}, rows);
  return el('div', { class: 'scroll' }, el('table', {}, head, body, footer ? el('tfoot', {}, footer) : null));
}

function figureList(pairs) {
  return el('dl', { class: 'figures' }, pairs.map(([label, amount, currency, field]) => [
    el('dt', {}, label),
    el('dd', { 'data-field': field }, money(amount, currency)),
  ]));
}

const main = () => document.getElementById('main');

function show(page, ...nodes) {
  const m = main();
  m.replaceChildren(...nodes);
  m.setAttribute('data-page', page);
  m.setAttribute('data-ready', 'true');
  for (const a of document.querySelectorAll('[data-page-link]')) {
    a.classList.toggle('current', a.getAttribute('data-page-link') === page);
  }
}

function showError(e) {
  show('error', el('p', { class: 'error' }, e.message));
}

// ---- pages -----------------------------------------------------------------------------

const FIGURES = [
  ['headline', 'Headline'],
  ['transaction_price', 'Transaction price'],
  ['recognized', 'Recognized'],
  ['rpo', 'RPO'],
  ['remaining_conditional', 'Remaining conditional'],
  ['forfeited', 'Forfeited'],
  ['cancelled', 'Cancelled'],
  ['billed', 'Billed'],
  ['collected', 'Collected'],
  ['receivable', 'Receivable'],
  ['deferred_revenue', 'Deferred revenue'],
  ['contract_asset', 'Contract asset'],
];

async function portfolioPage() {
  const p = await getJson('/v1/portfolio?as_of=' + state.asOf + '&granularity=quarter');
  const cards = p.totals.map((t) => el('div', { class: 'card', 'data-currency': t.currency },
    el('h3', {}, t.currency + ' · ' + t.contracts + (t.contracts === 1 ? ' contract' : ' contracts')),
    figureList(FIGURES.map(([k, label]) => [label, t[k], t.currency, 'total-' + t.currency + '-' + k])),
    el('h3', {}, 'Revenue per quarter'),
    table([{ label: 'period' }, { label: 'recognized', amount: true }],
      t.periods.map((q) => el('tr', {}, el('td', {}, q.period), amountCell(q.recognized, t.currency, 'period-' + t.currency + '-' + q.period)))),
  ));
  const columns = [{ label: 'contract' }, { label: 'currency' }, { label: 'headline', amount: true }, { label: 'recognized', amount: true },
    { label: 'RPO', amount: true }, { label: 'remaining conditional', amount: true }, { label: 'deferred revenue', amount: true }, { label: 'contract asset', amount: true }];
  const rows = p.contracts.map((c) => el('tr', { 'data-contract': c.contract_id },
    el('td', {}, el('a', { href: '#/contract/' + encodeURIComponent(c.contract_id) }, c.contract_id)),
    el('td', {}, c.currency),
    ['headline', 'recognized', 'rpo', 'remaining_conditional', 'deferred_revenue', 'contract_asset']
      .map((k) => amountCell(c[k], c.currency, 'contract-' + c.contract_id + '-' + k))));
  return [
    el('h2', {}, 'Portfolio as of ' + p.as_of, el('span', { class: 'muted' }, ' · known at seq ' + p.known_at)),
    p.totals.length ? el('div', { class: 'cards' }, cards) : el('p', { class: 'muted' }, 'No contracts yet.'),
    el('h2', {}, 'Contracts'),
    table(columns, rows),
  ];
}

async function contractPage(id) {
  const enc = encodeURIComponent(id);
  const asOf = state.asOf;
  const from = previousQuarterEnd(asOf);
  const [contract, revenue, rpo, svg] = await Promise.all([
    getJson('/v1/contracts/' + enc + '?as_of=' + asOf),
    getJson('/v1/contracts/' + enc + '/revenue?as_of=' + asOf + '&granularity=quarter'),
    getJson('/v1/contracts/' + enc + '/rpo?as_of=' + asOf),
    getText('/v1/contracts/' + enc + '/chart.svg?as_of=' + asOf),
  ]);
  const rollforward = await getJson('/v1/contracts/' + enc + '/rollforward?from=' + from + '&to=' + asOf).catch(() => null);
  const c = revenue.currency;
  const chart = el('div', { class: 'chart' });
  const doc = new DOMParser().parseFromString(svg, 'image/svg+xml');
  if (doc.documentElement && doc.documentElement.nodeName === 'svg') chart.append(document.importNode(doc.documentElement, true));
  const rf = rollforward ? rollforwardTable(rollforward, c) : el('p', { class: 'muted' }, 'No rollforward for this period.');
  return [
    el('h2', {}, id, el('span', { class: 'muted' }, ' · ' + contract.customer + ' from ' + contract.provider + ' · ' + contract.term.start + ' to ' + contract.term.end)),
    chart,
    el('div', { class: 'cards' },
      el('div', { class: 'card' }, el('h3', {}, 'Figures as of ' + revenue.as_of), figureList(FIGURES.map(([k, label]) => [label, revenue[k], c, 'figure-' + k]))),
      el('div', { class: 'card' }, el('h3', {}, 'RPO as of ' + rpo.as_of),
        figureList([['RPO', rpo.rpo, c, 'rpo-rpo'], ['Next 12 months', rpo.next_12_months, c, 'rpo-next_12_months'], ['Thereafter', rpo.thereafter, c, 'rpo-thereafter']]),
        table([{ label: 'bucket' }, { label: 'through' }, { label: 'amount', amount: true }],
          rpo.years.map((y) => el('tr', {}, el('td', {}, y.bucket), el('td', {}, y.through), amountCell(y.amount, c, 'rpo-' + y.bucket))))),
      el('div', { class: 'card' }, el('h3', {}, 'Revenue per quarter'),
        table([{ label: 'period' }, { label: 'recognized', amount: true }],
          revenue.periods.map((q) => el('tr', {}, el('td', {}, q.period), amountCell(q.recognized, c, 'period-' + q.period))))),
    ),
    el('h2', {}, 'Rollforward (' + from + ', ' + asOf + ']'),
    rf,
  ];
}

function rollforwardTable(r, currency) {
  const rows = [];
  for (const balance of ['net_contract_position', 'receivable', 'rpo', 'remaining_conditional']) {
    const w = r[balance];
    rows.push(el('tr', {}, el('th', {}, balance.replaceAll('_', ' ')), el('td', {}, 'opening'), amountCell(w.opening, currency, 'rf-' + balance + '-opening')));
    for (const [line, amount] of Object.entries(w.movements)) {
      rows.push(el('tr', {}, el('td', {}), el('td', {}, line.replaceAll('_', ' ')), amountCell(amount, currency, 'rf-' + balance + '-' + line)));
    }
    rows.push(el('tr', {}, el('td', {}), el('td', {}, 'closing'), amountCell(w.closing, currency, 'rf-' + balance + '-closing')));
  }
  return table([{ label: 'balance' }, { label: 'line' }, { label: 'amount', amount: true }], rows);
}

async function waterfallPage() {
  const w = await getJson('/v1/portfolio/waterfall?as_of=' + state.asOf + '&granularity=quarter');
  const columns = [{ label: 'contract' }, { label: 'currency' }]
    .concat(w.columns.map((col) => ({ label: col.period, amount: true })))
    .concat([{ label: 'RPO', amount: true }, { label: 'remaining conditional', amount: true }]);
  const rows = w.rows.map((r) => el('tr', { 'data-contract': r.contract_id },
    el('td', {}, el('a', { href: '#/contract/' + encodeURIComponent(r.contract_id) }, r.contract_id)),
    el('td', {}, r.currency),
    r.scheduled.map((a, i) => amountCell(a, r.currency, 'wf-' + r.contract_id + '-' + w.columns[i].period)),
    amountCell(r.rpo, r.currency, 'wf-' + r.contract_id + '-rpo'),
    amountCell(r.remaining_conditional, r.currency, 'wf-' + r.contract_id + '-conditional')));
  const totals = w.totals.map((t) => el('tr', { 'data-currency': t.currency },
    el('td', {}, 'Total ' + t.currency), el('td', {}, t.contracts + ''),
    t.scheduled.map((a, i) => amountCell(a, t.currency, 'wf-total-' + t.currency + '-' + w.columns[i].period)),
    amountCell(t.rpo, t.currency, 'wf-total-' + t.currency + '-rpo'),
    amountCell(t.remaining_conditional, t.currency, 'wf-total-' + t.currency + '-conditional')));
  return [
    el('h2', {}, 'Waterfall of scheduled recognition as of ' + w.as_of, el('span', { class: 'muted' }, ' · per quarter · each row adds up to its RPO; conditional value apart')),
    table(columns, rows, totals),
  ];
}

async function timelinePage() {
  const [head, checkpoint] = await Promise.all([
    getJson('/v1/chain/head'),
    getJson('/v1/checkpoints/latest').catch(() => null),
  ]);
  state.head = head;
  updateHead();
  const list = el('ol', { id: 'event-list' }, state.events.map(eventItem));
  return [
    el('h2', {}, 'Chain'),
    el('div', { class: 'cards' },
      el('div', { class: 'card' }, el('h3', {}, 'Head'),
        el('p', {}, 'seq ', el('strong', { 'data-field': 'head-seq' }, String(head.seq))),
        el('p', { class: 'mono' }, head.hash)),
      el('div', { class: 'card' }, el('h3', {}, 'Latest checkpoint'),
        checkpoint ? [el('p', {}, 'tree size ', el('strong', { 'data-field': 'checkpoint-size' }, String(checkpoint.tree_size))),
          el('pre', { class: 'note' }, checkpoint.checkpoint)] : el('p', { class: 'muted' }, 'none'))),
    el('h2', {}, 'Events, live'),
    el('div', { id: 'timeline' }, list),
  ];
}

function eventItem(e) {
  return el('li', { 'data-seq': e.seq },
    el('span', { class: 'seq' }, '#' + e.seq), ' ',
    el('span', { class: 'tag' }, e.type), ' ',
    e.contract_id || '(ledger)', ' · effective ', e.effective_date, ' · ',
    el('span', { class: 'muted' }, 'recorded ' + e.recorded_at + ' by ' + (e.event && e.event.actor || '')));
}

// ---- routing ---------------------------------------------------------------------------

async function render() {
  const serial = ++state.renderSerial;
  const hash = location.hash || '#/';
  let page;
  let build;
  if (hash.startsWith('#/contract/')) {
    page = 'contract';
    build = () => contractPage(decodeURIComponent(hash.slice('#/contract/'.length)));
  } else if (hash === '#/waterfall') {
    page = 'waterfall';
    build = waterfallPage;
  } else if (hash === '#/timeline') {
    page = 'timeline';
    build = timelinePage;
  } else {
    page = 'portfolio';
    build = portfolioPage;
  }
  if ((page === 'timeline' && !state.canAudit) || (page !== 'timeline' && !state.canFinance)) {
    if (state.canAudit && page !== 'timeline') return (location.hash = '#/timeline');
    return show('forbidden', el('p', { class: 'error' }, 'This token\'s role may not read this page.'));
  }
  main().setAttribute('data-ready', 'false');
  try {
    const nodes = await build();
    if (serial === state.renderSerial) show(page, ...nodes);
  } catch (e) {
    if (e.status === 401) return askForToken('The server refused the token.');
    if (serial === state.renderSerial) showError(e);
  }
}

function scheduleRefresh() {
  clearTimeout(state.refreshTimer);
  state.refreshTimer = setTimeout(render, 250);
}

// ---- live events -----------------------------------------------------------------------

function updateHead() {
  const seq = state.head ? String(state.head.seq) : '–';
  document.getElementById('head-seq').textContent = seq;
}

function onLedgerEvent(e) {
  state.events.unshift(e);
  state.events.length = Math.min(state.events.length, EVENTS_KEPT);
  state.head = { seq: e.seq, hash: e.hash, recorded_at: e.recorded_at };
  updateHead();
  const list = document.getElementById('event-list');
  if (list) {
    list.prepend(eventItem(e));
    const headField = document.querySelector('[data-field="head-seq"]');
    if (headField) headField.textContent = String(e.seq);
  }
}

/** Server-Sent Events over fetch (EventSource cannot send a bearer token). */
async function follow(after) {
  state.streaming = true;
  const live = document.getElementById('live-state');
  let last = after;
  for (;;) {
    try {
      const r = await fetch('/v1/stream?after=' + last, { headers: headers({ Accept: 'text/event-stream' }) });
      if (!r.ok) throw new HttpError(r.status, null);
      live.textContent = 'live';
      const reader = r.body.getReader();
      const decoder = new TextDecoder();
      let buffer = '';
      let caughtUp = false;
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let cut;
        let any = false;
        while ((cut = buffer.indexOf('\n\n')) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          const fields = { data: [] };
          for (const line of block.split('\n')) {
            if (line.startsWith(':')) continue;
            const i = line.indexOf(':');
            const name = i < 0 ? line : line.slice(0, i);
            const text = i < 0 ? '' : line.slice(i + 1).replace(/^ /, '');
            if (name === 'data') fields.data.push(text); else fields[name] = text;
          }
          if (fields.event === 'ledger_event') {
            const e = JSON.parse(fields.data.join('\n'));
            last = e.seq;
            onLedgerEvent(e);
            any = true;
          }
        }
        // Figures on the page follow the ledger: redraw once a burst of events is in.
        if (any && caughtUp && (location.hash || '#/') !== '#/timeline') scheduleRefresh();
        caughtUp = true;
      }
    } catch (e) {
      if (e.status === 401 || e.status === 403) { live.textContent = 'not allowed'; return; }
    }
    live.textContent = 'reconnecting';
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}

// ---- access ----------------------------------------------------------------------------

async function status(path) {
  const r = await fetch(path, { headers: headers() });
  return r.status;
}

function askForToken(message) {
  document.getElementById('token-panel').hidden = false;
  document.getElementById('token-error').textContent = message || '';
  document.getElementById('token-input').focus();
  main().setAttribute('data-page', 'token');
}

/** Finds out what this caller may read: the server answers 401 without a valid token
 * (it has tokens) and 403 for a role that may not read a route. */
async function start() {
  const [finance, audit] = await Promise.all([status('/v1/contracts?limit=1'), status('/v1/chain/head')]);
  if (finance === 401 || audit === 401) {
    return askForToken(state.token ? 'The server refused the token.' : '');
  }
  document.getElementById('token-panel').hidden = true;
  document.getElementById('forget-token').hidden = !state.token;
  state.canFinance = finance === 200;
  state.canAudit = audit === 200;
  for (const node of document.querySelectorAll('[data-needs]')) {
    const needs = node.getAttribute('data-needs');
    node.hidden = !((needs === 'finance' && state.canFinance) || (needs === 'audit' && state.canAudit));
  }
  if (!state.canFinance && !state.canAudit) {
    return show('forbidden', el('p', { class: 'error' }, 'This token\'s role may read neither figures nor the chain (a writer token?).'));
  }
  if (state.canAudit && !state.streaming) {
    const head = await getJson('/v1/chain/head');
    state.head = head;
    updateHead();
    follow(Math.max(0, head.seq - 50));
  }
  await render();
}

document.addEventListener('DOMContentLoaded', () => {
  const input = document.getElementById('as-of');
  state.asOf = todayUtc();
  input.value = state.asOf;
  input.addEventListener('change', () => {
    if (/^\d{4}-\d{2}-\d{2}$/.test(input.value)) {
      state.asOf = input.value;
      render();
    }
  });
  document.getElementById('as-of-form').addEventListener('submit', (e) => e.preventDefault());
  document.getElementById('token-form').addEventListener('submit', (e) => {
    e.preventDefault();
    state.token = document.getElementById('token-input').value.trim();
    sessionStorage.setItem(TOKEN_KEY, state.token);
    start();
  });
  document.getElementById('forget-token').addEventListener('click', () => {
    sessionStorage.removeItem(TOKEN_KEY);
    location.reload();
  });
  window.addEventListener('hashchange', render);
  start();
});
