// rangersync/status-element: <rangersync-status>, a framework-free indicator for one SyncClient.
//
// It only shows what the client's status and dead-letter list say and calls the client's own
// retryDead / discardDead: every decision stays in the client and the worker.
//
//   import 'rangersync/status-element';
//   document.querySelector('rangersync-status').client = client;

const STYLE = `
:host { display: inline-block; font: inherit; color: var(--rangersync-text, inherit); }
[hidden] { display: none !important; }
.pill { display: inline-flex; gap: .4em; align-items: center; padding: .15em .7em; border-radius: 1em;
  color: var(--rangersync-pill-text, #fff); background: var(--rangersync-saved, #2e7d32); cursor: pointer; border: 0; font: inherit; }
.pill[data-look="pending"] { background: var(--rangersync-pending, #8d6e00); }
.pill[data-look="syncing"] { background: var(--rangersync-syncing, #1565c0); }
.pill[data-look="offline"] { background: var(--rangersync-offline, #616161); }
.pill[data-look="error"] { background: var(--rangersync-error, #c62828); }
.pill[data-look="starting"] { background: var(--rangersync-offline, #616161); }
.panel { margin-top: .4em; padding: .5em .7em; border: 1px solid var(--rangersync-border, #ccc);
  border-radius: .4em; background: var(--rangersync-panel, #fff); color: var(--rangersync-panel-text, #222); }
.nudge { margin-top: .4em; padding: .4em .7em; border-radius: .4em; display: flex; gap: .6em; align-items: baseline;
  background: var(--rangersync-nudge, #fff3e0); color: var(--rangersync-nudge-text, #4e2600); }
dl { display: grid; grid-template-columns: auto 1fr; gap: .1em .8em; margin: 0; }
dt { opacity: .7; } dd { margin: 0; }
ul { margin: .3em 0 0; padding-left: 1.1em; }
li { margin: .2em 0; }
button.small { font: inherit; font-size: .9em; }
`;

/**
 * What a person should do about a status that needs them, or null. A dismissed nudge stays
 * away while its problem lasts (retries do not bring it back) and shows again once the
 * problem has cleared and comes back.
 */
function nudgeFor(status) {
  if (!status) return null;
  const error = status.last_error;
  if (status.state === 'config_error') {
    return { key: 'config_error', kind: 'config_error',
      text: 'The app cannot reach its sync server as configured: nothing is lost, but nothing is delivered. Tell whoever runs the app.' };
  }
  if (status.state === 'auth_error') {
    return { key: 'auth_error', kind: 'auth_error',
      text: 'The sync server did not accept your login: sign in again; your changes wait until then.' };
  }
  if (error && error.code === 'quota_exceeded') {
    return { key: 'quota_exceeded', kind: 'quota_exceeded',
      text: 'This browser is out of storage for the app: free some space (or export a backup) so new changes can be saved.' };
  }
  if (status.backup_error) {
    return { key: 'backup_error', kind: 'backup_error',
      text: 'The last backup did not reach the server: it is retried; use "Back up now" or export a file if it keeps failing.' };
  }
  return null;
}

/** The pill's words and look. */
function pillFor(status) {
  if (!status) return { text: 'Starting…', look: 'starting' };
  const pending = status.pending || 0;
  switch (status.state) {
    case 'auth_error': return { text: 'Auth error', look: 'error' };
    case 'config_error': return { text: 'Config error', look: 'error' };
    case 'error': return { text: pending ? `Error · ${pending} pending` : 'Error', look: 'error' };
    case 'offline': return { text: pending ? `Offline · ${pending} pending` : 'Offline', look: 'offline' };
    case 'syncing': return { text: 'Syncing…', look: 'syncing' };
    case 'saving': return { text: 'Saving…', look: 'syncing' };
    default:
      if (pending > 0) return { text: `Pending ${pending}`, look: 'pending' };
      // Everything else delivered, but the server refused some writes: the panel lists them.
      if (status.dead > 0) return { text: `${status.dead} failed`, look: 'error' };
      return { text: 'Saved', look: 'saved' };
  }
}

function bytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(0)} KiB`;
  return `${(n / (1024 * 1024)).toFixed(1)} MiB`;
}

function when(ms) {
  return ms ? new Date(ms).toLocaleString() : 'never';
}

class RangersyncStatus extends HTMLElement {
  constructor() {
    super();
    this._client = null;
    this._status = null;
    this._off = null;
    this._dead = [];
    this._deadCount = -1;
    this._dismissed = new Set();
    const root = this.attachShadow({ mode: 'open' });
    root.innerHTML = `<style>${STYLE}</style>
      <button class="pill" part="pill" aria-expanded="false" aria-controls="panel">
        <span aria-live="polite" part="state"></span></button>
      <span part="mode" class="mode" hidden></span>
      <div class="nudge" part="nudge" role="alert" hidden><span></span>
        <button class="small" part="dismiss" type="button">Dismiss</button></div>
      <div class="panel" id="panel" part="panel" hidden>
        <dl part="times">
          <dt>Pending</dt><dd data-field="pending"></dd>
          <dt>Last save</dt><dd data-field="saved"></dd>
          <dt>Last sync</dt><dd data-field="synced"></dd>
          <dt>Last backup</dt><dd data-field="backup"></dd>
          <dt>Storage</dt><dd data-field="storage"></dd>
        </dl>
        <p part="error" data-field="error" hidden></p>
        <div part="dead" data-field="dead" hidden><strong>Failed to deliver</strong><ul></ul></div>
      </div>`;
    this._pill = root.querySelector('.pill');
    this._pill.addEventListener('click', () => {
      const panel = root.getElementById('panel');
      panel.hidden = !panel.hidden;
      this._pill.setAttribute('aria-expanded', String(!panel.hidden));
    });
    root.querySelector('[part="dismiss"]').addEventListener('click', () => {
      const nudge = nudgeFor(this._status);
      if (nudge) this._dismissed.add(nudge.key);
      this._render();
    });
  }

  /** The SyncClient to show; setting it (again) subscribes to its status. */
  get client() {
    return this._client;
  }

  set client(client) {
    if (this._off) this._off();
    this._off = null;
    this._client = client || null;
    this._status = null;
    this._deadCount = -1;
    if (this._client && this.isConnected) this._subscribe();
    this._render();
  }

  /** The last status shown (null before the first). */
  get status() {
    return this._status;
  }

  connectedCallback() {
    if (this._client && !this._off) this._subscribe();
    this._render();
  }

  disconnectedCallback() {
    if (this._off) this._off();
    this._off = null;
  }

  _subscribe() {
    this._off = this._client.onStatus((status) => {
      this._status = status;
      if (status.dead !== this._deadCount) {
        this._deadCount = status.dead;
        this._loadDead();
      }
      this._render();
    });
  }

  async _loadDead() {
    const client = this._client;
    try {
      const dead = await client.deadLetters();
      if (client === this._client) {
        this._dead = dead;
        this._renderDead();
      }
    } catch (err) {
      console.error('rangersync-status: deadLetters() failed', err);
    }
  }

  async _act(seq, action) {
    const buttons = this.shadowRoot.querySelectorAll(`[data-seq="${seq}"] button`);
    buttons.forEach((b) => { b.disabled = true; });
    try {
      await (action === 'retry' ? this._client.retryDead(seq) : this._client.discardDead(seq));
    } catch (err) {
      console.error(`rangersync-status: ${action} of ${seq} failed`, err);
      buttons.forEach((b) => { b.disabled = false; });
    }
    await this._loadDead();
  }

  _render() {
    const root = this.shadowRoot;
    const s = this._status;
    const pill = pillFor(s);
    this._pill.dataset.look = pill.look;
    this._pill.dataset.state = s ? s.state : '';
    root.querySelector('[part="state"]').textContent = pill.text;
    this.dataset.state = s ? s.state : '';
    this.dataset.pending = s ? String(s.pending) : '';

    const mode = root.querySelector('[part="mode"]');
    mode.hidden = !(s && s.mode === 'page');
    mode.textContent = s && s.mode === 'page'
      ? ` Page mode: changes go out only while a page is open (${s.fallback_reason ?? 'no worker'})`
      : '';

    const nudge = nudgeFor(s);
    for (const key of this._dismissed) {
      if (!nudge || nudge.key !== key) this._dismissed.delete(key);
    }
    const box = root.querySelector('[part="nudge"]');
    box.hidden = !nudge || this._dismissed.has(nudge.key);
    box.dataset.kind = nudge ? nudge.kind : '';
    box.querySelector('span').textContent = nudge ? nudge.text : '';

    const field = (name) => root.querySelector(`[data-field="${name}"]`);
    const sending = s && s.in_flight ? ` (${s.in_flight} sending)` : '';
    const attachments = s && s.blob_bytes_pending ? `, ${bytes(s.blob_bytes_pending)} of attachments to upload` : '';
    field('pending').textContent = s ? `${s.pending}${sending}${attachments}` : '';
    field('saved').textContent = when(s?.last_saved_at);
    field('synced').textContent = when(s?.last_synced_at);
    field('backup').textContent = s?.backup_error
      ? `${when(s.last_backup_at)} (the last one failed: ${s.backup_error.code})`
      : when(s?.last_backup_at);
    field('storage').textContent = s?.persistent === false
      ? 'not persistent: the browser may clear it under storage pressure'
      : s?.persistent ? 'persistent' : 'unknown';
    const error = field('error');
    error.hidden = !s?.last_error;
    error.textContent = s?.last_error ? `${s.last_error.code}: ${s.last_error.message}` : '';

  }

  /**
   * The dead-letter list, rebuilt only when a new list is read (not on every status, which
   * would replace the buttons under a keyboard user's focus).
   */
  _renderDead() {
    const dead = this.shadowRoot.querySelector('[data-field="dead"]');
    dead.hidden = this._dead.length === 0;
    const list = dead.querySelector('ul');
    list.replaceChildren(...this._dead.map((d) => {
      const li = document.createElement('li');
      li.dataset.seq = String(d.seq);
      li.setAttribute('part', 'dead-letter');
      const what = d.kind === 'request' ? `${d.method} ${d.url}`
        : d.kind === 'blob' ? `attachment ${(d.sha256 || '').slice(0, 12)}…`
        : `${d.collection}/${d.key}`;
      li.append(`${what}: ${d.reason} `);
      for (const [label, action] of [['Retry', 'retry'], ['Discard', 'discard']]) {
        const b = document.createElement('button');
        b.type = 'button';
        b.className = 'small';
        b.dataset.action = action;
        b.setAttribute('part', `${action}-button`);
        b.textContent = label;
        b.addEventListener('click', () => this._act(d.seq, action));
        li.append(b, ' ');
      }
      return li;
    }));
  }
}

if (!customElements.get('rangersync-status')) {
  customElements.define('rangersync-status', RangersyncStatus);
}

export { RangersyncStatus };
