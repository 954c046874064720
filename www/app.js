// RangerPlex demo: a small notes / chat / settings app built only on the rangersync page API.
// Every write goes through client.put / client.delete; what is shown comes from client.list,
// client.onChange and client.onStatus; the status indicator is the package's own
// <rangersync-status> element (rangersync/status-element), given the client.
//
// URL parameters for trying things: `?page` runs without the service worker (page mode),
// `?server=http://host:port` syncs with another server, `?token=…` sends a bearer token.
import init, { SyncClient } from '/pkg/rangersync_page.js';
// Defines <rangersync-status> (the page's #sync-status), as `import 'rangersync/status-element'`.
import '/pkg/status-element.js';

const $ = (id) => document.getElementById(id);

// The theme of the last visit, before the local copy is read (no light flash in dark mode).
const THEME_KEY = 'rangerplex-theme';
try { document.documentElement.dataset.theme = localStorage.getItem(THEME_KEY) || 'light'; } catch (_) { /* storage disabled */ }

const SETTINGS = [
  { key: 'dark_theme', label: 'Dark theme', hint: 'Easier on the eyes at night', def: false },
  { key: 'compact', label: 'Compact layout', hint: 'Tighter spacing in lists', def: false },
  { key: 'send_on_enter', label: 'Send chat on Enter', hint: 'Off: press the Send button', def: true },
  { key: 'notifications', label: 'Notifications', hint: 'Tell me when a sync fails', def: true },
];

const state = {
  client: null,
  status: null,
  notes: [],          // [{ key, value: { title, body }, updated_at, pending }]
  selected: null,     // note key
  draft: null,        // the selected note's client.autosave handle
  attachments: [],    // the selected note's attachments: client.putBlob references
  blobUrls: new Map(), // sha256 → object URL of a blob already shown
  chat: [],
  settings: {},
  lastDead: -1,
};

// ---------- helpers ----------

function toast(text, kind = 'info', ms = 4000) {
  const el = document.createElement('div');
  el.className = `toast toast-${kind}`;
  el.textContent = text;
  $('toasts').append(el);
  setTimeout(() => el.classList.add('leaving'), ms);
  setTimeout(() => el.remove(), ms + 400);
}

function showError(err, what) {
  const code = err && err.code ? err.code : 'error';
  const message = err && err.message ? err.message : String(err);
  console.error(what, err);
  toast(`${what}: ${message} (${code})`, 'error', 6000);
}

function ago(ms) {
  if (ms == null) return 'never';
  const s = Math.round((Date.now() - ms) / 1000);
  if (s < 0) return `in ${formatSpan(-s)}`;
  if (s < 2) return 'just now';
  return `${formatSpan(s)} ago`;
}

function formatSpan(s) {
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  if (s < 86400) return `${Math.floor(s / 3600)} h`;
  return `${Math.floor(s / 86400)} d`;
}

function newKey(prefix) {
  // Sortable by time, unique across tabs and devices.
  const t = Date.now().toString(36).padStart(9, '0');
  const r = Math.random().toString(36).slice(2, 8);
  return `${prefix}-${t}-${r}`;
}

function debounce(fn, ms) {
  let t;
  const run = (...args) => { clearTimeout(t); t = setTimeout(() => fn(...args), ms); };
  run.flush = () => { clearTimeout(t); fn(); };
  run.cancel = () => clearTimeout(t);
  return run;
}

// ---------- status ----------
// What the status says is shown by <rangersync-status> (pill, pending count, times, storage,
// page mode, nudges, and the failed-to-deliver list with Retry and Discard). The app adds the
// facts it does not show (last export, next backup and retry, mode) and, with the
// "Notifications" setting, a toast when sync breaks or a write fails to deliver.

/** A toast for sync trouble, when the "Notifications" setting is on. */
function notify(text) {
  if (settingValue('notifications')) toast(text, 'error', 6000);
}

function renderStatus(previous) {
  const s = state.status;
  if (!s) return;
  if (previous && previous.state !== s.state && (s.state === 'error' || s.state === 'auth_error' || s.state === 'config_error')) {
    notify(s.state === 'auth_error' ? 'Sync stopped: the server refused the sign-in.' : `Sync failed: ${s.last_error ? friendly(s.last_error) : 'unknown error'}`);
  }
  $('mode-text').textContent = s.mode === 'page' ? 'page (no worker)' : 'worker';
  renderTimes();
  if (s.dead !== state.lastDead) {
    if (state.lastDead >= 0 && s.dead > state.lastDead) notify(`${s.dead - state.lastDead} change(s) could not be delivered: click the status in the top bar to retry or discard.`);
    state.lastDead = s.dead;
  }
}

/** What a person should read for the last sync error, in a toast. */
function friendly(e) {
  switch (e.code) {
    case 'network': return 'Can’t reach the sync server. Your changes are safe on this device.';
    case 'auth': return 'The sync server refused the sign-in. Sign in again to resume syncing.';
    case 'server_error': return 'The sync server had a problem. Your changes are safe on this device.';
    case 'quota_exceeded': return 'This device is out of storage space for the app.';
    default: return e.message;
  }
}

function renderTimes() {
  const s = state.status;
  if (s) {
    $('last-exported').textContent = ago(s.last_exported_at);
    $('next-backup').textContent = s.next_backup_at ? ago(s.next_backup_at) : '—';
    $('next-retry').textContent = s.next_retry_at ? ago(s.next_retry_at) : '—';
  }
  for (const el of document.querySelectorAll('[data-time]')) {
    el.textContent = ago(Number(el.dataset.time));
  }
}

// ---------- notes ----------

async function refreshNotes() {
  try {
    const items = await state.client.list('notes');
    state.notes = items.sort((a, b) => b.updated_at - a.updated_at);
    renderNotes();
    // Show a change made elsewhere (another tab, the server) unless the user is typing here.
    const current = state.notes.find((n) => n.key === state.selected);
    const editing = document.activeElement === $('note-title') || document.activeElement === $('note-body');
    if (current && !editing && !state.dirty) {
      $('note-title').value = (current.value && current.value.title) || '';
      $('note-body').value = (current.value && current.value.body) || '';
      state.attachments = (current.value && current.value.attachments) || [];
      renderAttachments();
    }
  } catch (e) { showError(e, 'Could not read notes'); }
}

function renderNotes() {
  const list = $('note-list');
  list.replaceChildren();
  const tpl = $('note-item');
  for (const n of state.notes) {
    const li = tpl.content.firstElementChild.cloneNode(true);
    const btn = li.querySelector('button');
    btn.querySelector('.note-title').textContent = (n.value && n.value.title) || 'Untitled';
    const meta = btn.querySelector('.note-meta');
    meta.dataset.time = n.updated_at;
    meta.textContent = ago(n.updated_at);
    if (n.pending) {
      const p = document.createElement('span');
      p.className = 'tag tag-pending';
      p.textContent = 'pending';
      p.title = 'Saved here, not yet on the server';
      btn.append(p);
    }
    if (n.key === state.selected) btn.classList.add('active');
    btn.addEventListener('click', () => selectNote(n.key));
    list.append(li);
  }
  if (!state.notes.length) {
    const li = document.createElement('li');
    li.className = 'muted small pad';
    li.textContent = 'No notes yet.';
    list.append(li);
  }
  const current = state.notes.find((n) => n.key === state.selected);
  $('editor').hidden = !current;
  $('editor-empty').hidden = !!current;
  if (current) {
    $('note-state').textContent = current.pending ? 'Saved on this device · waiting to sync' : 'Saved and synced';
  }
}

// The open note is saved as it is typed (client.autosave: 350 ms after the last keystroke, at
// most 2 s while typing on, handed over at once when the tab is hidden or closed).
function openDraft(key) {
  if (state.draft) state.draft.dispose().catch((e) => showError(e, 'Could not save the note'));
  state.draft = key ? state.client.autosave('notes', key, { debounceMs: 350 }) : null;
  state.dirty = false;
  if (!state.draft) return;
  const draft = state.draft;
  draft.onStatus((s) => {
    if (state.draft !== draft) return;
    // Typed but not yet handed to the outbox: never overwrite the editor.
    state.dirty = s.state === 'saving';
    if (s.state === 'saved') $('note-state').textContent = 'Saved on this device';
    if (s.state === 'error') showError(s.error, 'Could not save the note');
  });
}

function selectNote(key) {
  if (!state.draft || state.draft.status.key !== key) openDraft(key);
  state.selected = key;
  const n = state.notes.find((x) => x.key === key);
  $('note-title').value = (n && n.value && n.value.title) || '';
  $('note-body').value = (n && n.value && n.value.body) || '';
  state.attachments = (n && n.value && n.value.attachments) || [];
  renderAttachments();
  renderNotes();
  $('note-title').focus();
}

// ---------- attachments ----------

// Each image is kept in this browser by client.putBlob before the note refers to it, uploaded
// by the worker (in resumable chunks, before the note's write), and read back with
// client.getBlob: from this browser, or from the server on another device.
async function attachFiles(files) {
  const key = state.selected;
  if (!key || !state.draft) return;
  for (const file of files) {
    try {
      const ref = await state.client.putBlob(file);
      if (state.selected !== key) return;
      state.attachments = [...state.attachments, ref];
      saveNote();
      await state.draft.flush();
    } catch (e) { showError(e, `Could not attach ${file.name}`); }
  }
  renderAttachments();
}

function renderAttachments() {
  const list = $('note-attachments');
  list.replaceChildren();
  for (const ref of state.attachments) {
    const blob = ref && ref.$blob;
    if (!blob) continue;
    const li = document.createElement('li');
    const img = document.createElement('img');
    img.alt = blob.name || 'attachment';
    img.dataset.sha256 = blob.sha256;
    const caption = document.createElement('span');
    caption.className = 'muted small';
    caption.textContent = `${blob.name || 'image'} · ${Math.ceil(blob.size / 1024)} KiB`;
    li.append(img, caption);
    list.append(li);
    const shown = state.blobUrls.get(blob.sha256);
    if (shown) { img.src = shown; continue; }
    state.client.getBlob(ref).then((b) => {
      const url = URL.createObjectURL(b);
      state.blobUrls.set(blob.sha256, url);
      img.src = url;
    }, (e) => {
      li.dataset.missing = e.code || 'error';
      caption.textContent = e.code === 'blob_not_found'
        ? `${blob.name || 'image'}: not uploaded yet by the device that has it`
        : `${blob.name || 'image'}: cannot be shown now (${e.code || 'error'})`;
    });
  }
  list.hidden = !list.children.length;
}

function saveNote() {
  if (!state.draft) return;
  state.dirty = true;
  try {
    state.draft.set({ title: $('note-title').value, body: $('note-body').value, attachments: state.attachments });
  } catch (e) { showError(e, 'Could not save the note'); }
}

async function newNote() {
  const key = newKey('n');
  try {
    await state.client.put('notes', key, { title: '', body: '' });
    state.selected = key;
    await refreshNotes();
    selectNote(key);
  } catch (e) { showError(e, 'Could not create a note'); }
}

async function deleteNote() {
  const key = state.selected;
  if (!key) return;
  // What was typed into a note being deleted must not bring it back.
  if (state.draft) state.draft.cancel();
  state.draft = null;
  state.dirty = false;
  try {
    await state.client.delete('notes', key);
    state.selected = null;
    await refreshNotes();
    toast('Note deleted');
  } catch (e) { showError(e, 'Could not delete the note'); }
}

// ---------- chat ----------

async function refreshChat() {
  try {
    const items = await state.client.list('chat');
    state.chat = items.sort((a, b) => (a.key < b.key ? -1 : 1));
    renderChat();
  } catch (e) { showError(e, 'Could not read the chat'); }
}

function renderChat() {
  const log = $('chat-log');
  const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
  log.replaceChildren();
  for (const m of state.chat) {
    const li = document.createElement('li');
    li.className = 'msg';
    const bubble = document.createElement('div');
    bubble.className = 'bubble';
    bubble.textContent = (m.value && m.value.text) || '';
    const meta = document.createElement('div');
    meta.className = 'msg-meta';
    const who = document.createElement('span');
    who.textContent = (m.value && m.value.author) || 'You';
    const when = document.createElement('span');
    when.dataset.time = m.updated_at;
    when.textContent = ago(m.updated_at);
    meta.append(who, when);
    if (m.pending) {
      const p = document.createElement('span');
      p.className = 'tag tag-pending';
      p.textContent = 'pending';
      meta.append(p);
    }
    li.append(bubble, meta);
    log.append(li);
  }
  if (!state.chat.length) {
    const li = document.createElement('li');
    li.className = 'muted small pad';
    li.textContent = 'No messages yet. Say hi — it works offline too.';
    log.append(li);
  }
  $('chat-count').textContent = state.chat.length ? `${state.chat.length} messages` : '';
  if (atBottom || log.dataset.first !== 'done') { log.scrollTop = log.scrollHeight; log.dataset.first = 'done'; }
}

async function sendChat(ev) {
  ev.preventDefault();
  const input = $('chat-input');
  const text = input.value.trim();
  if (!text) return;
  try {
    await state.client.put('chat', newKey('m'), { author: 'You', text, at: Date.now() });
    input.value = '';
    await refreshChat();
  } catch (e) { showError(e, 'Could not send'); }
}

// ---------- settings ----------

async function refreshSettings() {
  try {
    const items = await state.client.list('settings');
    state.settings = Object.fromEntries(items.map((i) => [i.key, i]));
    renderSettings();
  } catch (e) { showError(e, 'Could not read settings'); }
}

function settingValue(key) {
  const s = SETTINGS.find((x) => x.key === key);
  const item = state.settings[key];
  return item ? !!(item.value && item.value.enabled) : s.def;
}

function renderSettings() {
  const box = $('settings-list');
  box.replaceChildren();
  for (const s of SETTINGS) {
    const row = document.createElement('label');
    row.className = 'setting';
    const text = document.createElement('span');
    text.className = 'setting-text';
    const name = document.createElement('span');
    name.textContent = s.label;
    const hint = document.createElement('span');
    hint.className = 'muted small';
    hint.textContent = s.hint;
    text.append(name, hint);
    const input = document.createElement('input');
    input.type = 'checkbox';
    input.className = 'switch';
    input.checked = settingValue(s.key);
    input.addEventListener('change', async () => {
      try {
        await state.client.put('settings', s.key, { enabled: input.checked });
        applySettings();
      } catch (e) { input.checked = !input.checked; showError(e, 'Could not save the setting'); }
    });
    row.append(text, input);
    if (state.settings[s.key] && state.settings[s.key].pending) {
      row.classList.add('is-pending');
      row.title = 'Saved here, not yet on the server';
    }
    box.append(row);
  }
  applySettings();
}

function applySettings() {
  const theme = settingValue('dark_theme') ? 'dark' : 'light';
  document.documentElement.dataset.theme = theme;
  try { localStorage.setItem(THEME_KEY, theme); } catch (_) { /* storage disabled */ }
  document.body.classList.toggle('compact', settingValue('compact'));
}

// ---------- sync panel: export, restore ----------

async function exportAs(format) {
  try {
    const text = await state.client.exportSnapshot(format);
    const type = format === 'yaml' ? 'text/yaml' : 'application/json';
    const url = URL.createObjectURL(new Blob([text], { type }));
    const a = document.createElement('a');
    const stamp = new Date().toISOString().slice(0, 16).replace(/[:T]/g, '-');
    a.href = url;
    a.download = `rangerplex-${stamp}.${format === 'yaml' ? 'yaml' : 'json'}`;
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
    toast(`Exported ${format.toUpperCase()}`, 'ok');
    state.client.status().then((s) => { state.status = s; renderStatus(); }).catch(() => {});
  } catch (e) { showError(e, 'Export failed'); }
}

async function backupNow() {
  try {
    await state.client.backupNow();
    toast('Backed up to the server', 'ok');
    refreshBackups();
  } catch (e) { showError(e, 'Backup failed'); }
  state.client.status().then((s) => { state.status = s; renderStatus(); }).catch(() => {});
}

/** What the restore dialog applies: `{ text }` (a file) or `{ backupId }` (a server backup). */
let restoreSource = null;

async function pickRestore(ev) {
  const file = ev.target.files && ev.target.files[0];
  ev.target.value = '';
  if (!file) return;
  try {
    const text = await file.text();
    const report = await state.client.restore(text, { dryRun: true });
    showRestore({ text }, `${file.name} · dry run: nothing has been changed yet`, report);
  } catch (e) { showError(e, 'This file cannot be restored'); }
}

function showRestore(source, title, report) {
  restoreSource = source;
  $('restore-file-name').textContent = title;
  renderReport(report);
  const pending = report.pending || { requeued: [], dead_restored: [] };
  const work = report.added.length + report.replaced.length
    + pending.requeued.length + pending.dead_restored.length;
  $('restore-apply').disabled = work === 0 || report.blocked != null;
  $('restore-dialog').showModal();
}

/** Dry-run a server backup and show the report; Apply restores it. */
async function previewServerBackup(b) {
  try {
    const report = await state.client.restoreFromServer(b.id, { dryRun: true });
    showRestore({ backupId: b.id },
      `Backup of ${new Date(b.exported_at).toLocaleString()} · dry run: nothing has been changed yet`, report);
  } catch (e) { showError(e, 'This backup cannot be restored'); }
}

async function refreshBackups() {
  let list = [];
  try { list = await state.client.serverBackups({ allClients: true }); } catch (e) { return; }
  const ul = $('backup-list');
  ul.replaceChildren();
  $('backup-empty').hidden = list.length > 0;
  for (const b of list.slice(0, 14)) {
    const li = document.createElement('li');
    const what = document.createElement('span');
    const n = Object.values(b.counts || {}).reduce((a, c) => a + c, 0);
    what.textContent = `${new Date(b.exported_at).toLocaleString()} · ${n} item(s) · ${(b.size / 1024).toFixed(1)} KiB`;
    const btn = document.createElement('button');
    btn.className = 'btn btn-small';
    btn.type = 'button';
    btn.textContent = 'Restore…';
    btn.dataset.backupId = String(b.id);
    btn.addEventListener('click', () => previewServerBackup(b));
    li.append(what, btn);
    ul.append(li);
  }
  return list;
}

/**
 * A new database (first visit, or the site's storage was cleared): offer the newest backup of
 * another client (this new one may have backed up its own, nearly empty, copy already).
 */
async function offerLatestBackup() {
  const list = await refreshBackups();
  if (!state.status || !state.status.new_database || !list) return;
  const latest = list.find((b) => b.client_id !== state.status.client_id);
  if (!latest) return;
  $('backup-offer-text').textContent = `Restore from backup of ${new Date(latest.exported_at).toLocaleString()}?`;
  $('backup-offer').hidden = false;
  $('backup-offer-yes').onclick = () => { $('backup-offer').hidden = true; previewServerBackup(latest); };
}

function renderReport(r) {
  const box = $('restore-report');
  box.replaceChildren();
  const grid = document.createElement('div');
  grid.className = 'report-grid';
  const pending = r.pending || { requeued: [], dead_restored: [], refused: [] };
  for (const [label, items, cls] of [
    ['Added', r.added, 'ok'], ['Replaced', r.replaced, 'warn'],
    ['Unchanged', r.unchanged, 'muted'], ['Refused', [...r.refused, ...(pending.refused || [])], 'bad'],
    ['Unsynced writes re-sent', pending.requeued, 'ok'], ['Failed writes', pending.dead_restored, 'warn'],
  ]) {
    const cell = document.createElement('div');
    cell.className = `report-cell report-${cls}`;
    const n = document.createElement('strong');
    n.textContent = String(items.length);
    const l = document.createElement('span');
    l.textContent = label;
    cell.append(n, l);
    grid.append(cell);
  }
  box.append(grid);
  if (r.blocked) {
    const p = document.createElement('p');
    p.className = 'error-line';
    p.textContent = `Cannot restore: ${r.blocked}`;
    box.append(p);
  }
  if (pending.requeued.length || pending.dead_restored.length) {
    const p = document.createElement('p');
    p.className = 'muted small';
    p.textContent = `Unsynced writes are re-sent under their own ids (client ${pending.client_id}), `
      + 'so the server applies each once even if it received it after the backup'
      + (pending.adopts_client_id ? '; this browser continues as that client.' : '.');
    box.append(p);
  }
  const details = [...r.replaced.map((e) => `replace ${e.collection}/${e.key}`),
    ...r.refused.map((e) => `refuse ${e.collection}/${e.key}: ${e.reason}`),
    ...(pending.refused || []).map((e) => `refuse pending write ${e.seq}: ${e.reason}`)];
  if (details.length) {
    const ul = document.createElement('ul');
    ul.className = 'report-list';
    for (const d of details.slice(0, 50)) {
      const li = document.createElement('li');
      li.textContent = d;
      ul.append(li);
    }
    box.append(ul);
  }
}

async function closeRestore() {
  const source = restoreSource;
  restoreSource = null;
  if ($('restore-dialog').returnValue !== 'apply' || source == null) return;
  try {
    const r = source.backupId != null
      ? await state.client.restoreFromServer(source.backupId, { dryRun: false })
      : await state.client.restore(source.text, { dryRun: false });
    const resent = r.pending ? r.pending.requeued.length : 0;
    toast(`Restored: ${r.added.length} added, ${r.replaced.length} replaced, ${resent} unsynced write(s) re-sent`, 'ok');
    $('backup-offer').hidden = true;
    await Promise.all([refreshNotes(), refreshChat(), refreshSettings()]);
  } catch (e) { showError(e, 'Restore failed'); }
}

async function syncNow() {
  try {
    state.status = await state.client.flush();
    renderStatus();
  } catch (e) { showError(e, 'Sync failed'); }
}

// ---------- start ----------

const refreshAll = debounce(() => { refreshNotes(); refreshChat(); refreshSettings(); }, 150);
const refreshers = { notes: debounce(refreshNotes, 80), chat: debounce(refreshChat, 80), settings: debounce(refreshSettings, 80) };

/**
 * The files this app needs to open with no network: the worker caches them when it installs.
 * (The page module's snippet folder is named by a build hash, so it is taken from what this
 * page loaded; page mode's extras are left out: they load only when a worker cannot run.)
 */
function appShellFiles() {
  const snippets = performance.getEntriesByType('resource')
    .map((entry) => new URL(entry.name))
    .filter((url) => url.origin === location.origin && url.pathname.startsWith('/pkg/snippets/'))
    .map((url) => url.pathname);
  return [
    '/', '/app.js', '/style.css', '/manifest.webmanifest',
    '/pkg/rangersync_page.js', '/pkg/rangersync_page_bg.wasm', '/pkg/status-element.js',
    ...new Set(snippets),
  ];
}

async function start() {
  try {
    await init();
    const params = new URLSearchParams(location.search);
    state.client = await SyncClient.register({
      swUrl: '/sw.js',
      serverUrl: params.get('server') || location.origin,
      token: params.get('token') || undefined,
      captureRoutes: ['/api/sync/chat', '/api/sync/settings'],
      exportIntervalMs: 24 * 60 * 60 * 1000,
      forcePageMode: params.has('page'),
      appShell: { files: appShellFiles() },
    });
  } catch (e) {
    $('sync-status').hidden = true;
    const banner = $('banner');
    banner.hidden = false;
    banner.textContent = `Sync could not start: ${e && e.message ? e.message : e}${e && e.code ? ` (${e.code})` : ''}`;
    console.error(e);
    return;
  }
  const client = state.client;
  $('sync-status').client = client;
  client.onStatus((s) => {
    const before = state.status;
    state.status = s;
    renderStatus(before);
    // A sync acknowledged writes or pulled changes: refresh the "pending" tags.
    // A write in another tab changes last_saved_at at once.
    if (before && (s.pending < before.pending || s.last_synced_at !== before.last_synced_at
      || s.last_saved_at !== before.last_saved_at)) refreshAll();
  });
  client.onChange((collection) => { if (refreshers[collection]) refreshers[collection](); });
  // Hydration: the local copy is there at once, before any network answer.
  await Promise.all([refreshNotes(), refreshChat(), refreshSettings()]);
  if (!state.selected && state.notes.length) selectNote(state.notes[0].key);
  try { state.status = await client.status(); renderStatus(); } catch (e) { showError(e, 'No status'); }
  offerLatestBackup();

  $('new-note').addEventListener('click', newNote);
  $('delete-note').addEventListener('click', deleteNote);
  $('note-title').addEventListener('input', saveNote);
  $('note-body').addEventListener('input', saveNote);
  $('attach-file').addEventListener('change', (e) => {
    const files = [...e.target.files];
    e.target.value = '';
    attachFiles(files);
  });
  $('editor').addEventListener('submit', (e) => e.preventDefault());
  $('chat-form').addEventListener('submit', sendChat);
  $('chat-input').addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !settingValue('send_on_enter')) e.preventDefault();
  });
  $('sync-now').addEventListener('click', syncNow);
  $('backup-now').addEventListener('click', backupNow);
  $('backups-refresh').addEventListener('click', refreshBackups);
  $('export-json').addEventListener('click', () => exportAs('json'));
  $('export-yaml').addEventListener('click', () => exportAs('yaml'));
  $('restore-file').addEventListener('change', pickRestore);
  $('restore-dialog').addEventListener('close', closeRestore);
  setInterval(renderTimes, 1000);
  // For the console and for tests: set last, so it also says every control is wired.
  window.rangersync = client;
}

start();
