// The entlog dashboard: one page, two views (#/ the cluster, #/entity/TYPE/ID one
// entity), refreshed from the JSON endpoints without reloading. Everything the journal
// holds is shown through textContent, never parsed as HTML.
'use strict';

// Script errors, for anyone (or any test) asking whether the page works.
window.__entlogErrors = [];
window.addEventListener('error', (e) => window.__entlogErrors.push(String(e.message || e)));
window.addEventListener('unhandledrejection', (e) => window.__entlogErrors.push(String(e.reason)));

const token = new URLSearchParams(location.search).get('token');
const REFRESH_MS = { overview: 1000, entity: 2000 };
let timer = null;
let generation = 0;

class ApiError extends Error {
  constructor(message, status) { super(message); this.status = status; }
}

async function api(path, params = {}) {
  const url = new URL(path, location.href);
  url.search = '';
  for (const [k, v] of Object.entries(params)) if (v !== null && v !== undefined) url.searchParams.set(k, v);
  if (token) url.searchParams.set('token', token);
  const response = await fetch(url);
  const body = await response.json().catch(() => ({ error: response.statusText }));
  if (!response.ok) throw new ApiError(body.error || response.statusText, response.status);
  return body;
}

// h('td', {class: 'num'}, 'text', child…): an element with attributes and children.
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'class') el.className = v; else el.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function entityHref(address) {
  const [type, ...id] = address.split('/');
  return '#/entity/' + encodeURIComponent(type) + '/' + id.map(encodeURIComponent).join('/');
}

function payloadText(p) {
  if (!p) return '';
  if (p.value !== undefined) return JSON.stringify(p.value);
  const raw = `<${p.type} v${p.version}, ${p.bytes} bytes: ${p.raw_hex}>`;
  return p.decode_error ? `${raw} — undecodable: ${p.decode_error}` : raw;
}

function secs(s) {
  if (s === null || s === undefined) return '';
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  if (s < 120) return `${s.toFixed(1)} s`;
  return `${Math.round(s / 60)} min`;
}

function showError(message) {
  const banner = document.getElementById('error');
  banner.hidden = !message;
  banner.textContent = message || '';
}

function section(title, count, ...body) {
  return h('section', {}, h('h2', {}, title, count === null ? null : h('span', { class: 'count' }, ` (${count})`)), ...body);
}

// --- the cluster ---------------------------------------------------------------------

function problems(status) {
  const items = [];
  for (const s of status.stuck) {
    const kind = s.projection ? 'projection' : s.group ? 'group' : 'stuck';
    const label = s.projection ? 'projection stopped' : s.group ? 'group without runner' : 'stuck shard';
    items.push(h('li', { class: kind === 'group' ? 'stuck' : kind, 'data-kind': kind },
      h('span', { class: 'kind' }, label), s.cause));
  }
  for (const p of status.poison) {
    items.push(h('li', { class: 'poison', 'data-kind': 'poison' },
      h('span', { class: 'kind' }, 'poison message'),
      h('a', { href: entityHref(p.entity) }, p.entity), ` message ${p.message_id} (shard ${p.shard} offset ${p.offset}) failed at ${p.failed_at}: ${p.reason}`));
  }
  for (const d of status.damaged) {
    items.push(h('li', { class: 'damaged', 'data-kind': 'damaged' },
      h('span', { class: 'kind' }, 'damaged entry'), `shard ${d.shard} offset ${d.offset}, recorded at ${d.recorded_at}: ${d.reason}`));
  }
  return section('Failures', items.length,
    items.length ? h('ul', { class: 'problems', id: 'problems' }, items) : h('p', { class: 'muted', id: 'problems' }, 'Nothing stuck, no poison messages, no damaged entries.'));
}

function runners(status) {
  return section('Runners', status.runners.length, h('table', { id: 'runners' },
    h('tr', {}, h('th', {}, 'runner'), h('th', {}, 'state'), h('th', { class: 'num' }, 'heartbeat'), h('th', { class: 'num' }, 'shards'), h('th', {}, 'started')),
    status.runners.map((r) => h('tr', {},
      h('td', {}, h('code', {}, r.runner), r.groups ? h('span', { class: 'muted' }, ' hosts ' + r.groups.join(', ')) : ''),
      h('td', {}, h('span', { class: 'pill ' + (r.live ? 'ok' : 'bad') }, r.live ? 'live' : 'gone')),
      h('td', { class: 'num' }, secs(r.heartbeat_age_seconds) + ' ago'),
      h('td', { class: 'num' }, status.shards.filter((s) => s.owner === r.runner).length),
      h('td', {}, r.started_at)))));
}

function shardMap(status) {
  const cells = status.shards.map((s) => {
    const state = s.trouble ? 'trouble' : (s.owner && !s.owner_live) || (!s.owner && s.backlog > 0) ? 'orphan' : s.backlog > 0 ? 'backlog' : 'ok';
    const title = s.trouble ? `retrying since ${s.trouble.since}: ${s.trouble.cause}` : '';
    return h('div', { class: 'shard ' + state, 'data-shard': s.shard, title },
      h('div', {}, h('span', { class: 'n' }, `#${s.shard}`), ` epoch ${s.epoch}` + (status.shard_groups.length > 1 ? ` · ${s.group}` : '')),
      h('div', { class: 'owner' }, s.owner ? s.owner + (s.owner_live ? '' : ' (gone)') : 'no owner'),
      h('div', {}, `head ${s.head} · cursor ${s.cursor}`),
      h('div', { 'data-backlog': s.backlog }, `backlog ${s.backlog}` + (s.scheduled ? ` · scheduled ${s.scheduled}` : '')));
  });
  return section('Shards', status.shard_count, h('div', { class: 'shards', id: 'shards' }, cells));
}

function projections(status) {
  return section('Projections', status.projections.length, h('table', { id: 'projections' },
    h('tr', {}, h('th', {}, 'projection'), h('th', { class: 'num' }, 'lag (events)'), h('th', { class: 'num' }, 'lag (time)'), h('th', {}, 'state')),
    status.projections.map((p) => h('tr', {},
      h('td', {}, p.name),
      h('td', { class: 'num' }, p.lag_events),
      h('td', { class: 'num' }, secs(p.lag_seconds)),
      h('td', {}, p.failing.length ? h('span', { class: 'pill bad' }, `stopped on ${p.failing.length} shard(s)`) : h('span', { class: 'pill ok' }, 'no errors'))))));
}

function chart(name, samples, field, unit) {
  const values = samples.map((s) => s[field]);
  const max = Math.max(1, ...values);
  const w = 300, hgt = 70;
  const points = values.map((v, i) => `${values.length < 2 ? 0 : (i / (values.length - 1)) * w},${hgt - 4 - (v / max) * (hgt - 8)}`).join(' ');
  const svg = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
  svg.setAttribute('viewBox', `0 0 ${w} ${hgt}`);
  svg.setAttribute('preserveAspectRatio', 'none');
  const line = document.createElementNS('http://www.w3.org/2000/svg', 'polyline');
  line.setAttribute('points', points);
  svg.append(line);
  const now = values.length ? values[values.length - 1] : 0;
  return h('div', { class: 'chart', 'data-chart': field },
    h('div', {}, name, ' ', h('span', { class: 'now' }, Number.isInteger(now) ? now : now.toFixed(1)), ` ${unit}`, h('span', { class: 'muted' }, ` · max ${Number.isInteger(max) ? max : max.toFixed(1)}`)),
    svg);
}

function charts(history) {
  const span = secs(history.samples.length * history.interval_seconds);
  return section(`The last ${span}`, null, h('div', { class: 'charts' },
    chart('committed', history.samples, 'entries_per_second', 'entries/s'),
    chart('backlog', history.samples, 'backlog', 'messages'),
    chart('projection lag', history.samples, 'projection_lag', 'events')));
}

async function overview(gen) {
  const [status, history] = await Promise.all([api('api/status'), api('api/history')]);
  if (gen !== generation) return;
  const view = document.getElementById('view');
  view.replaceChildren(problems(status), charts(history), h('div', { class: 'row' }, runners(status), projections(status)), shardMap(status));
  document.body.dataset.view = 'overview';
}

// --- one entity ----------------------------------------------------------------------

function changesList(changes) {
  if (!changes.length) return h('span', { class: 'changes' }, '(no change)');
  return h('div', { class: 'changes' }, changes.map((c) => h('div', {},
    h('b', {}, c.path || 'state'), ': ', c.before === null ? '(none)' : JSON.stringify(c.before), ' → ', c.after === null ? '(none)' : JSON.stringify(c.after))));
}

// Entities whose page replays every event even where a snapshot could start it.
const fullReplay = new Set();
// Up to this many events, a page always replays from the first event.
const CHEAP_REPLAY = 2000;

async function entity(gen, type, id, before) {
  const path = `${encodeURIComponent(type)}/${id.split('/').map(encodeURIComponent).join('/')}`;
  const page = await api(`api/inspect/${path}`, { before });
  const events = page.entries.filter((e) => e.kind === 'event');
  let replay = null, replayNote = null, partial = null;
  if (events.length) {
    const lastSeq = events[events.length - 1].seq;
    const snap = page.snapshot && page.snapshot.checksum_ok ? page.snapshot.seq : null;
    // A long history with a snapshot inside the page: states from the snapshot on (cheap),
    // the earlier ones on request (a replay of every event).
    let last = events.length;
    if (snap !== null && snap >= events[0].seq && snap <= lastSeq && lastSeq > CHEAP_REPLAY && !fullReplay.has(path)) {
      last = lastSeq - snap;
      partial = { snap, lastSeq };
    }
    try {
      replay = await api(`api/replay/${path}`, { to_seq: lastSeq, last });
    } catch (e) {
      if (!(e instanceof ApiError)) throw e;
      replayNote = e.message;
    }
  }
  if (gen !== generation) return;
  const steps = new Map((replay ? replay.events : []).map((s) => [s.seq, s]));
  const rows = page.entries.map((e) => {
    if (e.kind === 'message') {
      const reply = e.reply ? payloadText(e.reply.payload) : 'not processed yet';
      const headers = e.headers && Object.keys(e.headers).length
        ? h('div', { class: 'muted headers' }, 'headers ', JSON.stringify(e.headers)) : null;
      return h('tr', { class: 'message', 'data-offset': e.offset },
        h('td', { class: 'num' }, e.offset), h('td', {}, e.created_at), h('td', {}, 'message'),
        h('td', { class: 'payload' }, payloadText(e.payload), headers),
        h('td', { class: 'payload' }, reply));
    }
    const step = steps.get(e.seq);
    return h('tr', { class: 'event', 'data-offset': e.offset, 'data-seq': e.seq },
      h('td', { class: 'num' }, e.offset), h('td', {}, e.created_at), h('td', {}, `event ${e.seq}`),
      h('td', { class: 'payload' }, payloadText(e.payload)),
      h('td', {}, step ? [changesList(step.changes), h('div', { class: 'state payload', 'data-state': e.seq }, JSON.stringify(step.state))] : ''));
  });
  const messages = page.entries.length - events.length;
  const older = page.more_before
    ? h('p', {}, h('a', { class: 'more', href: `#/entity/${path}?before=${page.entries[0].offset}` }, 'Older entries →'))
    : null;
  const newer = before ? h('p', {}, h('a', { href: `#/entity/${path}` }, '← Newest entries')) : null;
  const snapshot = page.snapshot
    ? h('p', {}, `Snapshot at seq ${page.snapshot.seq} (${page.snapshot.created_at}${page.snapshot.checksum_ok ? '' : ', FAILS its checksum'}): `, h('code', {}, payloadText(page.snapshot.state)))
    : h('p', { class: 'muted' }, 'No snapshot.');
  const scheduled = page.scheduled.length
    ? section('Scheduled', page.scheduled.length, h('table', {}, page.scheduled.map((s) => h('tr', {}, h('td', {}, s.deliver_at), h('td', {}, h('code', {}, s.message_id)), h('td', { class: 'payload' }, payloadText(s.payload))))))
    : null;
  const view = document.getElementById('view');
  view.replaceChildren(...[
    section(page.entity, null,
      h('p', {}, `Shard ${page.shard}; this page: ${messages} message(s), ${events.length} event(s)`,
        replay ? `; state after seq ${events[events.length - 1].seq}: ` : '', replay ? h('code', { id: 'state' }, JSON.stringify(replay.state)) : '',
        replay && replay.from_snapshot !== null ? h('span', { class: 'muted' }, ` (replayed from the snapshot at seq ${replay.from_snapshot})`) : ''),
      replayNote ? h('p', { class: 'muted' }, `States are not shown: ${replayNote}`) : null,
      partial ? h('p', { class: 'muted' }, `States are shown from the snapshot at seq ${partial.snap} on; those before it take a replay of all ${partial.lastSeq} events. `,
        h('button', { id: 'replay-all', type: 'button' }, 'Replay all')) : null,
      snapshot),
    scheduled,
    section('History', page.entries.length, newer,
      h('table', { id: 'timeline' },
        h('tr', {}, h('th', { class: 'num' }, 'offset'), h('th', {}, 'time'), h('th', {}, 'entry'), h('th', {}, 'payload'), h('th', {}, 'reply / what it changed, state after')),
        rows),
      older),
  ].filter(Boolean));
  document.body.dataset.view = 'entity';
  const all = document.getElementById('replay-all');
  if (all) all.addEventListener('click', () => { fullReplay.add(path); navigate(); });
}

// --- routing and refresh -------------------------------------------------------------

function route() {
  const hash = location.hash.replace(/^#/, '') || '/';
  const [path, query] = hash.split('?');
  const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  if (parts[0] === 'entity' && parts.length >= 3) {
    const before = new URLSearchParams(query || '').get('before');
    return { view: 'entity', type: parts[1], id: parts.slice(2).join('/'), before };
  }
  return { view: 'overview' };
}

async function refresh(gen) {
  const r = route();
  try {
    if (r.view === 'entity') await entity(gen, r.type, r.id, r.before);
    else await overview(gen);
    if (gen !== generation) return;
    showError(null);
    document.getElementById('updated').textContent = 'updated ' + new Date().toLocaleTimeString();
    document.body.dataset.ready = 'true';
  } catch (e) {
    if (!(e instanceof ApiError) && !(e instanceof TypeError)) throw e;
    if (gen === generation) showError(e.message);
  }
  // An older page of a long history does not change: no need to read it again.
  if (gen === generation && !(r.view === 'entity' && r.before)) {
    timer = setTimeout(() => refresh(gen), REFRESH_MS[r.view]);
  }
}

function navigate() {
  generation += 1;
  clearTimeout(timer);
  document.body.dataset.ready = 'false';
  refresh(generation);
}

async function start() {
  const types = await api('api/types');
  document.getElementById('title').textContent = `${types.title} · ${types.shard_count} shards`;
  document.getElementById('types').replaceChildren(...types.registered.map((t) => h('option', { value: t })));
  document.getElementById('find').addEventListener('submit', (e) => {
    e.preventDefault();
    const t = document.getElementById('find-type').value.trim();
    const id = document.getElementById('find-id').value.trim();
    if (t && id) location.hash = entityHref(`${t}/${id}`);
  });
  window.addEventListener('hashchange', navigate);
  navigate();
}

start().catch((e) => showError(e.message));
