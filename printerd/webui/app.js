// printgate web UI. Plain JS, no build step, no external requests. Every piece of text from
// the server (printer names, file names, firmware lines, device names) is rendered with
// textContent: nothing is ever parsed as HTML.
'use strict';

const $ = (id) => document.getElementById(id);

// el builds an element with text and attributes; never HTML.
function el(tag, text, attrs) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (attrs) for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  return e;
}

const state = {
  me: null,            // {name, role}
  printers: new Map(), // name → nativeStatus
  mesh: [],            // printers of the mesh's other gateways: {name, gateway, address, gateway_address}
  history: new Map(),  // name → [{t, tool, toolT, bed, bedT}]
  current: null,       // printer shown
  ws: null,
  wsBackoff: 500,
};

const roleRank = { viewer: 1, operator: 2, admin: 3 };
const can = (role) => state.me && roleRank[state.me.role] >= roleRank[role];

// ---------------------------------------------------------------- API

class APIError extends Error {
  constructor(status, body) {
    super((body && body.error) || ('HTTP ' + status));
    this.status = status;
    this.rule = body && body.rule;
  }
}

async function api(method, path, body) {
  const opts = { method, headers: { 'X-Printgate': '1' }, credentials: 'omit', cache: 'no-store' };
  if (body !== undefined) {
    opts.headers['Content-Type'] = 'application/json';
    opts.body = JSON.stringify(body);
  }
  const r = await fetch(path, opts);
  if (r.status === 204) return null;
  let data = null;
  try { data = await r.json(); } catch (e) { data = null; }
  if (!r.ok) throw new APIError(r.status, data);
  return data;
}

function showMessage(text, kind) {
  const m = $('message');
  m.textContent = text;
  m.dataset.kind = kind || 'error';
  m.hidden = !text;
  if (text && kind === 'info') setTimeout(() => { if (m.textContent === text) m.hidden = true; }, 4000);
}

// controlError shows a refusal (policy rule named) in the panel of the control that was used
// (the one #control-error element moves there).
function controlError(err, near) {
  const c = $('control-error');
  if (!err) { c.hidden = true; c.textContent = ''; c.dataset.rule = ''; return; }
  const panel = near && near.closest ? near.closest('.panel') : null;
  if (panel && c.parentNode !== panel) panel.append(c);
  c.textContent = err.rule ? ('Refused (' + err.rule + '): ' + err.message) : err.message;
  c.dataset.rule = err.rule || '';
  c.hidden = false;
}

// act runs a control's action; near is the control, to show a refusal beside it.
async function act(fn, near) {
  if (near === undefined && document.activeElement) near = document.activeElement;
  try {
    controlError(null);
    await fn();
  } catch (e) {
    controlError(e, near);
    showMessage(e.message);
  }
}

// ---------------------------------------------------------------- formatting

function fmtDuration(s) {
  if (!s || s <= 0) return '–';
  s = Math.round(s);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  return (h ? h + ':' + String(m).padStart(2, '0') : m) + ':' + String(sec).padStart(2, '0');
}

function fmtBytes(n) {
  if (n < 1024) return n + ' B';
  if (n < 1 << 20) return (n / 1024).toFixed(1) + ' KiB';
  return (n / (1 << 20)).toFixed(1) + ' MiB';
}

// linked reports whether the printer's serial link is up, so that its readings are live and
// its controls can work.
const linkedStates = ['operational', 'printing', 'pausing', 'paused', 'cancelling'];
const isLinked = (st) => linkedStates.includes(st.state);

function fmtTemp(t) {
  if (!t) return '–';
  return t.actual.toFixed(1) + ' / ' + t.target.toFixed(0) + ' °C';
}

function fmtAge(s) {
  if (s === null || s === undefined) return 'never';
  if (s < 120) return Math.round(s) + ' s ago';
  if (s < 7200) return Math.round(s / 60) + ' min ago';
  return Math.round(s / 3600) + ' h ago';
}

// ---------------------------------------------------------------- views

function route() {
  const h = location.hash || '#/';
  for (const v of document.querySelectorAll('.view')) v.hidden = true;
  state.current = null;
  controlError(null);
  showMessage('');
  let m;
  if ((m = h.match(/^#\/printer\/([A-Za-z0-9_-]{1,32})$/))) {
    state.current = m[1];
    $('view-printer').hidden = false;
    openPrinter(m[1]);
  } else if (h === '#/devices' && can('admin')) {
    $('view-devices').hidden = false;
    loadDevices();
  } else if (h === '#/audit' && can('admin')) {
    $('view-audit').hidden = false;
    loadAudit();
  } else {
    $('view-overview').hidden = false;
    renderOverview();
  }
}

function renderOverview() {
  const list = $('printer-list');
  list.replaceChildren();
  for (const [name, st] of state.printers) {
    const a = el('a', null, { href: '#/printer/' + name, class: 'card printer-card', 'data-printer': name, 'data-state': st.state });
    const h = el('h2');
    h.append(el('span', name), el('span', st.text, { class: 'state', 'data-state': st.state }));
    a.append(h);
    const t0 = st.temps.tools && st.temps.tools[0];
    if (isLinked(st)) a.append(el('p', 'Hotend ' + fmtTemp(t0) + ' · Bed ' + fmtTemp(st.temps.bed), { class: 'temps' }));
    else a.append(el('p', 'Hotend – · Bed – (' + st.text.toLowerCase() + ')', { class: 'temps', 'data-live': 'false' }));
    if (st.error) a.append(el('p', st.error, { class: 'error printer-error' }));
    if (st.job) {
      a.append(el('p', st.job.file + ' · ' + st.job.progress.toFixed(1) + ' % · left ' + fmtDuration(st.job.left)));
      const p = el('progress', null, { max: '100' });
      p.value = st.job.progress;
      a.append(p);
    }
    list.append(a);
  }
  if (state.printers.size === 0 && state.mesh.length === 0) list.append(el('p', 'No printers configured.'));
  // Printers of the mesh's other gateways: served (and authorized) by their own gateway's UI,
  // reached through this one.
  for (const p of state.mesh) {
    const href = '//' + (p.gateway_address ? p.gateway_address + '/#/printer/' + encodeURIComponent(p.name) : p.address + '/');
    const a = el('a', null, { href: href, class: 'card printer-card', 'data-printer': p.name, 'data-gateway': p.gateway });
    const h = el('h2');
    h.append(el('span', p.name), el('span', 'on ' + p.gateway, { class: 'state', 'data-state': 'remote' }));
    a.append(h, el('p', 'Open on gateway ' + p.gateway + ' (' + (p.gateway_address || p.address) + ')', { class: 'temps' }));
    list.append(a);
  }
}

async function openPrinter(name) {
  $('printer-name').textContent = name;
  $('terminal-log').textContent = '';
  try {
    const [st, temps] = await Promise.all([
      api('GET', '/api/v1/printers/' + name),
      api('GET', '/api/v1/printers/' + name + '/temps?limit=300'),
    ]);
    state.printers.set(name, st);
    state.history.set(name, (temps.history || []).map(histPoint));
    renderPrinter();
    loadFiles();
  } catch (e) {
    showMessage(e.message);
  }
}

function histPoint(t) {
  const tool = t.tools && t.tools[0];
  return {
    t: new Date(t.time).getTime(),
    tool: tool ? tool.actual : null, toolT: tool ? tool.target : null,
    bed: t.bed ? t.bed.actual : null, bedT: t.bed ? t.bed.target : null,
  };
}

function renderPrinter() {
  const name = state.current;
  const st = state.printers.get(name);
  if (!st) return;
  const js = $('job-state');
  js.textContent = st.text;
  js.dataset.state = st.state;
  const pe = $('printer-error');
  pe.textContent = st.error || '';
  pe.hidden = !st.error;
  const job = st.job;
  $('job-file').textContent = job ? job.file : (st.selected || '–');
  $('job-progress').value = job ? job.progress : 0;
  $('job-progress').dataset.state = job ? (job.done ? 'done' : job.cancelled ? 'cancelled' : job.failed ? 'failed' : st.state) : 'none';
  $('job-progress-text').textContent = (job ? job.progress.toFixed(1) : '0') + ' %';
  $('job-elapsed').textContent = job ? fmtDuration(job.elapsed) : '–';
  $('job-time-left').textContent = job ? (job.done ? '0:00' : fmtDuration(job.left)) : '–';
  const printing = st.state === 'printing', paused = st.state === 'paused';
  const linked = isLinked(st);
  $('btn-pause').disabled = !printing;
  $('btn-resume').disabled = !paused;
  $('btn-cancel').disabled = !(printing || paused || st.state === 'pausing');
  $('btn-connect').disabled = linked;
  $('btn-emergency').disabled = !linked;
  $('btn-disconnect').disabled = !linked || printing || paused;
  const t0 = st.temps.tools && st.temps.tools[0];
  // Readings of a printer that is not linked are old: show none rather than stale ones.
  $('temp-tool0').textContent = linked ? fmtTemp(t0) : '– (' + st.text.toLowerCase() + ')';
  $('temp-bed').textContent = linked ? fmtTemp(st.temps.bed) : '–';
  $('panel-temps').dataset.live = String(linked);
  // Controls that need the link are off without it; the print buttons in the file list too.
  const idle = st.state === 'operational';
  for (const id of ['btn-set-tool0', 'btn-off-tool0', 'btn-set-bed', 'btn-off-bed', 'target-tool0', 'target-bed', 'jog-step', 'btn-home']) $(id).disabled = !linked;
  for (const b of document.querySelectorAll('.jog button[data-axis]')) b.disabled = !linked || printing;
  $('btn-home').disabled = !linked || printing;
  for (const b of document.querySelectorAll('#file-list .btn-print')) b.disabled = !idle;
  $('file-list').dataset.printable = String(idle);
  $('panel-webcam').hidden = !(st.webcam || st.snapshot);
  const img = $('webcam-img');
  if (st.webcam && !img.dataset.src) {
    img.dataset.src = '1';
    img.src = '/api/v1/printers/' + name + '/webcam/stream';
  } else if (!st.webcam && st.snapshot && !img.dataset.src) {
    img.dataset.src = '1';
    img.src = '/api/v1/printers/' + name + '/webcam/snapshot';
  }
  drawChart();
}

// ---------------------------------------------------------------- chart

function drawChart() {
  const c = $('temp-chart');
  const ctx = c.getContext('2d');
  const w = c.width, h = c.height, padL = 36, padB = 18, padT = 8, padR = 8;
  ctx.clearRect(0, 0, w, h);
  const pts = state.history.get(state.current) || [];
  const now = pts.length ? pts[pts.length - 1].t : Date.now();
  const span = 10 * 60 * 1000;
  const from = now - span;
  const vis = pts.filter((p) => p.t >= from);
  let max = 50;
  for (const p of vis) max = Math.max(max, p.tool || 0, p.toolT || 0, p.bed || 0, p.bedT || 0);
  max = Math.ceil((max + 10) / 50) * 50;
  const x = (t) => padL + (w - padL - padR) * (t - from) / span;
  const y = (v) => h - padB - (h - padB - padT) * v / max;
  ctx.strokeStyle = '#e5e7eb';
  ctx.fillStyle = '#667085';
  ctx.font = '11px system-ui, sans-serif';
  ctx.lineWidth = 1;
  for (let v = 0; v <= max; v += 50) {
    ctx.beginPath(); ctx.moveTo(padL, y(v)); ctx.lineTo(w - padR, y(v)); ctx.stroke();
    ctx.fillText(String(v), 4, y(v) + 4);
  }
  for (let m = 0; m <= 10; m += 2) ctx.fillText('-' + (10 - m) + 'm', x(from + m * 60000) - 10, h - 4);
  const series = [['tool', '#dc2626', []], ['toolT', '#dc2626', [6, 4]], ['bed', '#2563eb', []], ['bedT', '#2563eb', [6, 4]]];
  for (const [key, color, dash] of series) {
    ctx.strokeStyle = color;
    ctx.setLineDash(dash);
    ctx.lineWidth = 2;
    ctx.beginPath();
    let started = false;
    for (const p of vis) {
      if (p[key] === null || p[key] === undefined) continue;
      if (!started) { ctx.moveTo(x(p.t), y(p[key])); started = true; } else ctx.lineTo(x(p.t), y(p[key]));
    }
    ctx.stroke();
  }
  ctx.setLineDash([]);
  c.dataset.points = String(vis.length);
}

// ---------------------------------------------------------------- files

async function loadFiles() {
  const name = state.current;
  if (!name) return;
  try {
    const r = await api('GET', '/api/v1/printers/' + name + '/files');
    const tb = $('file-list');
    tb.replaceChildren();
    for (const f of r.files) {
      if (f.folder) continue;
      const tr = el('tr', null, { 'data-path': f.path });
      tr.append(el('td', f.path), el('td', fmtBytes(f.size)), el('td', fmtDuration(f.estimate)));
      const td = el('td');
      const dl = el('a', '⤓', { href: '/api/v1/printers/' + name + '/download/' + f.path.split('/').map(encodeURIComponent).join('/'), download: f.name, class: 'btn-download', title: 'download' });
      td.append(dl, ' ');
      if (can('operator')) {
        const pb = el('button', 'Print', { type: 'button', class: 'btn-print' });
        const cur = state.printers.get(name);
        pb.disabled = !cur || cur.state !== 'operational';
        pb.addEventListener('click', () => act(async () => {
          await api('POST', '/api/v1/printers/' + name + '/print', { path: f.path });
          showMessage('Printing ' + f.path, 'info');
        }));
        const db = el('button', 'Delete', { type: 'button', class: 'btn-delete' });
        db.addEventListener('click', () => act(async () => {
          if (!confirm('Delete ' + f.path + '?')) return;
          await api('DELETE', '/api/v1/printers/' + name + '/files/' + f.path.split('/').map(encodeURIComponent).join('/'));
          loadFiles();
        }));
        td.append(pb, ' ', db);
      }
      tr.append(td);
      tb.append(tr);
    }
  } catch (e) {
    showMessage(e.message);
  }
}

function upload(ev) {
  ev.preventDefault();
  const name = state.current;
  const input = $('file-input');
  if (!name || !input.files.length) return;
  const file = input.files[0];
  const fd = new FormData();
  if ($('upload-print').checked) fd.append('print', 'true');
  fd.append('file', file, file.name);
  const xhr = new XMLHttpRequest();
  const bar = $('upload-progress'), status = $('upload-status');
  bar.hidden = false;
  bar.value = 0;
  status.textContent = 'uploading ' + file.name + ': 0 %';
  status.dataset.state = 'uploading';
  $('btn-upload').disabled = true;
  xhr.upload.addEventListener('progress', (e) => {
    if (!e.lengthComputable) return;
    const pct = Math.round(100 * e.loaded / e.total);
    bar.value = pct;
    status.textContent = 'uploading ' + file.name + ': ' + pct + ' % (' + fmtBytes(e.loaded) + ' of ' + fmtBytes(e.total) + ')';
  });
  xhr.addEventListener('loadend', () => {
    $('btn-upload').disabled = false;
    let body = null;
    try { body = JSON.parse(xhr.responseText); } catch (e) { body = null; }
    if (xhr.status === 201) {
      bar.value = 100;
      status.textContent = 'uploaded ' + file.name + (body && body.printing ? ', printing' : '');
      status.dataset.state = 'done';
      input.value = '';
      loadFiles();
    } else {
      const err = new APIError(xhr.status || 0, body || { error: 'upload failed' });
      status.textContent = 'upload failed: ' + err.message;
      status.dataset.state = 'failed';
      controlError(err, $('form-upload'));
    }
  });
  xhr.open('POST', '/api/v1/printers/' + name + '/files');
  xhr.setRequestHeader('X-Printgate', '1');
  xhr.send(fd);
}

// ---------------------------------------------------------------- controls

function wireControls() {
  const p = () => '/api/v1/printers/' + state.current;
  $('btn-pause').addEventListener('click', () => act(() => api('POST', p() + '/job', { action: 'pause' })));
  $('btn-resume').addEventListener('click', () => act(() => api('POST', p() + '/job', { action: 'resume' })));
  $('btn-cancel').addEventListener('click', () => act(async () => {
    if (confirm('Cancel the print?')) await api('POST', p() + '/job', { action: 'cancel' });
  }));
  $('btn-emergency').addEventListener('click', () => act(async () => {
    if (confirm('Emergency stop (M112)? The printer needs a reconnect afterwards.')) await api('POST', p() + '/emergency');
  }));
  $('btn-connect').addEventListener('click', () => act(async () => {
    await api('POST', p() + '/connection', { action: 'connect' });
    showMessage('Connecting ' + state.current + '…', 'info');
    watchConnect(state.current);
  }));
  $('btn-disconnect').addEventListener('click', () => act(() => api('POST', p() + '/connection', { action: 'disconnect' })));
  const setTemp = (heater, input) => act(() => api('POST', p() + '/temperature', { heater, target: Number($(input).value) }));
  $('form-tool0').addEventListener('submit', (e) => { e.preventDefault(); setTemp('tool0', 'target-tool0'); });
  $('form-bed').addEventListener('submit', (e) => { e.preventDefault(); setTemp('bed', 'target-bed'); });
  $('btn-off-tool0').addEventListener('click', () => act(() => api('POST', p() + '/temperature', { heater: 'tool0', target: 0 })));
  $('btn-off-bed').addEventListener('click', () => act(() => api('POST', p() + '/temperature', { heater: 'bed', target: 0 })));
  for (const b of document.querySelectorAll('.jog button[data-axis]')) {
    b.addEventListener('click', () => act(() => {
      const d = Number($('jog-step').value) * Number(b.dataset.dir);
      return api('POST', p() + '/jog', { [b.dataset.axis]: d });
    }));
  }
  $('btn-home').addEventListener('click', () => act(() => api('POST', p() + '/home', { axes: [] })));
  $('form-upload').addEventListener('submit', upload);
  $('form-terminal').addEventListener('submit', (e) => {
    e.preventDefault();
    const line = $('terminal-input').value.trim();
    if (!line) return;
    terminalLine('> ' + line);
    act(async () => {
      try {
        await api('POST', p() + '/terminal', { command: line });
        $('terminal-input').value = '';
      } catch (err) {
        terminalLine('! ' + (err.rule ? '[' + err.rule + '] ' : '') + err.message);
        throw err;
      }
    });
  });
}

// watchConnect follows a connect, which the printer makes in the background: it reports the
// reason when the link is not up after a few seconds, or fails after having tried.
function watchConnect(name) {
  const deadline = Date.now() + 5000;
  let tried = false;
  const check = async () => {
    if (state.current !== name) return;
    let st;
    try {
      st = await api('GET', '/api/v1/printers/' + name);
    } catch (e) {
      showMessage(e.message);
      return;
    }
    state.printers.set(name, st);
    renderPrinter();
    if (isLinked(st)) return;
    if (st.state === 'connecting') tried = true;
    else if (tried || Date.now() > deadline) {
      showMessage('Connect ' + name + ' failed: ' + (st.error || st.text));
      return;
    }
    setTimeout(check, 500);
  };
  setTimeout(check, 500);
}

function terminalLine(text) {
  const log = $('terminal-log');
  log.append(document.createTextNode(text + '\n'));
  while (log.childNodes.length > 500) log.removeChild(log.firstChild);
  log.scrollTop = log.scrollHeight;
}

// ---------------------------------------------------------------- devices

async function loadDevices() {
  try {
    const [d, k] = await Promise.all([api('GET', '/api/v1/devices'), api('GET', '/api/v1/appkeys')]);
    const tb = $('device-list');
    tb.replaceChildren();
    for (const dev of d.devices) {
      const tr = el('tr', null, { 'data-device': dev.name, 'data-state': dev.state, 'data-clone': String(!!dev.clone) });
      tr.append(el('td', dev.name), el('td', dev.role), el('td', dev.state), el('td', fmtAge(dev.last_handshake_age_seconds)),
        el('td', dev.endpoint || '–'), el('td', '↓' + fmtBytes(dev.rx_bytes || 0) + ' ↑' + fmtBytes(dev.tx_bytes || 0)));
      const td = el('td');
      if (dev.state !== 'revoked' && dev.state !== 'expired') {
        const b = el('button', 'Revoke', { type: 'button', class: 'btn-revoke danger' });
        b.addEventListener('click', () => act(async () => {
          if (!confirm('Revoke ' + dev.name + '? It loses access at once.')) return;
          await api('DELETE', '/api/v1/devices/' + encodeURIComponent(dev.name));
          loadDevices();
        }));
        td.append(b);
      }
      tr.append(td);
      tb.append(tr);
    }
    const kb = $('appkey-list');
    kb.replaceChildren();
    for (const r of k.requests) {
      const tr = el('tr', null, { 'data-token': r.token });
      tr.append(el('td', r.app), el('td', r.peer), el('td', r.role), el('td', new Date(r.created).toLocaleTimeString()));
      const td = el('td');
      const ok = el('button', 'Approve', { type: 'button', class: 'btn-approve' });
      ok.addEventListener('click', () => act(async () => { await api('POST', '/api/v1/appkeys/' + r.token, { decision: true }); loadDevices(); }));
      const no = el('button', 'Deny', { type: 'button', class: 'btn-deny' });
      no.addEventListener('click', () => act(async () => { await api('POST', '/api/v1/appkeys/' + r.token, { decision: false }); loadDevices(); }));
      td.append(ok, ' ', no);
      tr.append(td);
      kb.append(tr);
    }
    if (!k.requests.length) {
      const tr = el('tr');
      tr.append(el('td', 'No pending requests.', { colspan: '5' }));
      kb.append(tr);
    }
  } catch (e) {
    showMessage(e.message);
  }
}

function wireDevices() {
  $('form-enroll').addEventListener('submit', (e) => {
    e.preventDefault();
    act(async () => {
      const r = await api('POST', '/api/v1/devices', { name: $('enroll-name').value.trim(), role: $('enroll-role').value });
      $('enroll-qr').src = r.qr_data_url;
      $('enroll-apikey').textContent = r.api_key;
      $('enroll-config').textContent = r.config;
      $('enroll-result').hidden = false;
      $('enroll-name').value = '';
      loadDevices();
    });
  });
  $('btn-enroll-done').addEventListener('click', () => {
    $('enroll-qr').removeAttribute('src');
    $('enroll-apikey').textContent = '';
    $('enroll-config').textContent = '';
    $('enroll-result').hidden = true;
  });
}

// ---------------------------------------------------------------- audit

async function loadAudit() {
  try {
    const r = await api('GET', '/api/v1/audit?n=200');
    const tb = $('audit-list');
    tb.replaceChildren();
    for (const rec of r.records.slice().reverse()) {
      const args = Object.entries(rec.args || {}).map(([k, v]) => k + '=' + v).join(' ');
      const tr = el('tr', null, { 'data-seq': String(rec.seq) });
      tr.append(el('td', rec.seq), el('td', new Date(rec.time).toLocaleString()), el('td', rec.peer || '(gateway)'),
        el('td', rec.role || ''), el('td', rec.action), el('td', args), el('td', rec.result));
      tb.append(tr);
    }
  } catch (e) {
    showMessage(e.message);
  }
}

function wireAudit() {
  $('btn-audit-verify').addEventListener('click', () => act(async () => {
    const out = $('audit-verify-result');
    const r = await api('GET', '/api/v1/audit/verify');
    out.dataset.ok = String(r.ok);
    out.textContent = r.ok ? ('chain intact: ' + r.seq + ' records, head ' + String(r.hash).slice(0, 16) + '…') : ('TAMPERED: ' + r.error);
  }));
}

// ---------------------------------------------------------------- push

function connectPush() {
  const ps = $('push-state');
  ps.dataset.state = 'connecting';
  const ws = new WebSocket('ws://' + location.host + '/api/v1/push');
  state.ws = ws;
  ws.addEventListener('open', () => { ps.dataset.state = 'open'; state.wsBackoff = 500; });
  ws.addEventListener('message', (ev) => {
    let m;
    try { m = JSON.parse(ev.data); } catch (e) { return; }
    if (m.type === 'status') {
      state.printers.set(m.printer, m.status);
      const hist = state.history.get(m.printer);
      if (hist && m.status.temps && m.status.temps.time) {
        const pt = histPoint(m.status.temps);
        if (!hist.length || hist[hist.length - 1].t < pt.t) hist.push(pt);
        if (hist.length > 2000) hist.splice(0, hist.length - 2000);
      }
      if (state.current === m.printer) {
        const prev = $('job-state').dataset.state;
        renderPrinter();
        if (prev !== m.status.state) loadFiles();
      } else if (!$('view-overview').hidden) {
        renderOverview();
      }
    } else if (m.type === 'log' && m.printer === state.current) {
      terminalLine(m.line);
    } else if (m.type === 'alarm') {
      showMessage(m.printer + ': ' + m.line);
    }
  });
  ws.addEventListener('close', () => {
    ps.dataset.state = 'closed';
    setTimeout(connectPush, state.wsBackoff);
    state.wsBackoff = Math.min(state.wsBackoff * 2, 15000);
  });
}

// ---------------------------------------------------------------- start

async function start() {
  wireControls();
  wireDevices();
  wireAudit();
  try {
    state.me = await api('GET', '/api/v1/whoami');
    $('whoami').textContent = state.me.name + ' (' + state.me.role + ')';
    $('whoami').dataset.role = state.me.role;
    const r = await api('GET', '/api/v1/printers');
    for (const p of r.printers) state.printers.set(p.name, p);
    state.mesh = r.mesh || [];
  } catch (e) {
    showMessage(e.message);
  }
  for (const n of document.querySelectorAll('.admin-only')) n.hidden = !can('admin');
  for (const n of document.querySelectorAll('.operator-only')) n.hidden = !can('operator');
  window.addEventListener('hashchange', route);
  route();
  connectPush();
  // App-key requests arrive while an admin watches the devices page: refresh it.
  setInterval(() => { if (!$('view-devices').hidden) loadDevices(); }, 3000);
  document.body.dataset.ready = 'true';
}

// CSP violations are counted on <html data-csp-violations> so browser tests can assert none.
document.addEventListener('securitypolicyviolation', (e) => {
  const d = document.documentElement.dataset;
  d.cspViolations = String(Number(d.cspViolations || 0) + 1);
  d.cspLast = e.violatedDirective + ' ' + e.blockedURI;
});

document.addEventListener('DOMContentLoaded', start);
