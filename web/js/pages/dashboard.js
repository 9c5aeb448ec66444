// /dashboard: the library at a glance and the one primary action, Sync with Audible.
// The sync: POST /api/sync/token, open its audibleUrl (the extension reads the token from
// the URL fragment and uploads), then watch GET /api/sync/history until a sync newer than
// the click arrives, and say what changed.
import { html, useState, useEffect, useRef } from '../html.js';
import { get, post } from '../api.js';
import { ErrorText, relTime, fullDate, num, plural, setTitle } from '../ui.js';
import { Pending } from '../enrichment.js';
import { loadMe } from '../session.js';

const POLL_MS = 2000;
const WATCH_MS = 15 * 60 * 1000;      // the token's life: no import can arrive after it

// How many titles a sync removed: the import states it in its first warning
// ("N titles not in this upload were removed ..." or "WARNING: N of your M titles ...").
export function removedBy(sync) {
  for (const w of sync.warnings || []) {
    const m = /^(?:WARNING: )?(\d+) (?:of your \d+ titles|titles? not in this upload)/.exec(w);
    if (m) return Number(m[1]);
  }
  return 0;
}

// "212 titles · 3 new · 1 removed": totals after the sync, against the total before it.
export function summary(sync, totalBefore) {
  const total = sync.libraryCount + sync.wishlistCount;
  const removed = removedBy(sync);
  const added = Math.max(0, total - totalBefore + removed);
  return `${plural(total, 'title')} · ${num(added)} new · ${num(removed)} removed`;
}

function Stat({ label, value, hint }) {
  return html`<div class="stat"><span class="stat-value">${value}</span><span class="stat-label">${label}</span>
    ${hint && html`<span class="stat-hint">${hint}</span>`}</div>`;
}

function SyncCard({ first, totalBefore, onImported }) {
  const [phase, setPhase] = useState('idle');     // idle | waiting | done
  const [error, setError] = useState(null);
  const [result, setResult] = useState(null);
  const timer = useRef(null);
  useEffect(() => () => clearTimeout(timer.current), []);

  async function start() {
    setError(null);
    setResult(null);
    try {
      const before = await get('/api/sync/history?limit=1');
      const lastId = before[0] && before[0].id;
      const base = totalBefore;
      const tok = await post('/api/sync/token');
      window.open(tok.audibleUrl, '_blank', 'noopener');
      setPhase('waiting');
      const until = Date.now() + WATCH_MS;
      const poll = async () => {
        try {
          const h = await get('/api/sync/history?limit=1');
          if (h[0] && h[0].id !== lastId) {
            setPhase('done');
            setResult({ sync: h[0], before: base });
            onImported(h[0]);
            return;
          }
        } catch (e) { setError(e); }
        if (Date.now() < until) timer.current = setTimeout(poll, POLL_MS);
        else setPhase('idle');
      };
      timer.current = setTimeout(poll, POLL_MS);
    } catch (e) {
      setError(e);
      setPhase('idle');
    }
  }

  return html`<section class="card sync" aria-labelledby="sync-h">
    <h2 id="sync-h">${first ? 'Bring in your library' : 'Sync with Audible'}</h2>
    <p>The shelfsync browser extension reads your library and wishlist from Audible while you are signed in there.
      The button opens Audible in a new tab with a one-time code the extension picks up, and this page updates when the upload arrives.</p>
    ${first && html`<ol class="steps">
      <li>Install the shelfsync extension in this browser.</li>
      <li>Sign in to Audible in this browser.</li>
      <li>Press <strong>Sync with Audible</strong> below and keep the Audible tab open until it is done.</li>
    </ol>`}
    <div class="actions">
      <button type="button" class="btn primary big" onClick=${start} disabled=${phase === 'waiting'}>Sync with Audible</button>
      <a class="import-link" href="/import">or import a file</a>
    </div>
    <div aria-live="polite" class="sync-status">
      ${phase === 'waiting' && html`<p class="waiting"><span class="spinner" aria-hidden="true"></span>
        Waiting for the extension to upload your library…</p>`}
      ${phase === 'done' && result && (result.sync.success
        ? html`<p class="success">Synced: ${summary(result.sync, result.before)}</p>`
        : html`<p class="error">The sync failed: ${result.sync.errorMessage}</p>`)}
    </div>
    <${ErrorText} error=${error} />
  </section>`;
}

function SyncRow({ s }) {
  return html`<li class=${'sync-row' + (s.success ? '' : ' failed')}>
    <div class="sync-head">
      <time datetime=${s.syncedAt} title=${fullDate(s.syncedAt)}>${relTime(s.syncedAt)}</time>
      ${s.success
        ? html`<span>${plural(s.titlesImported, 'title')} · ${num(s.libraryCount)} library · ${num(s.wishlistCount)} wishlist · ${num(s.newToCatalog)} new to shelfsync</span>`
        : html`<span class="error-text">Failed: ${s.errorMessage}</span>`}
    </div>
    ${s.warnings && s.warnings.length > 0 && html`<details><summary>${plural(s.warnings.length, 'warning')}</summary>
      <ul class="warnings">${s.warnings.map((w) => html`<li>${w}</li>`)}</ul></details>`}
  </li>`;
}

function Tops({ title, items, param }) {
  if (!items || !items.length) return null;
  return html`<div class="tops"><h3>${title}</h3><ol>${items.map((t) => html`<li>
    <a href=${'/library?' + new URLSearchParams({ [param]: t.name })}>${t.name}</a> <span class="muted">${num(t.count)}</span></li>`)}</ol></div>`;
}

export default function Dashboard({ me }) {
  const [d, setD] = useState(null);
  const [error, setError] = useState(null);
  const [pending, setPending] = useState(me.enrichment ? me.enrichment.pending : 0);
  const load = () => get('/api/dashboard').then((x) => { setD(x); setError(null); }, setError);
  // After an import: the new titles' details are being fetched; say so from the fresh count.
  const imported = () => {
    load();
    loadMe(true).then((m) => { if (m && m.enrichment) setPending(m.enrichment.pending); }, () => {});
  };
  useEffect(() => { setTitle('Dashboard'); load(); }, []);

  const name = me.user.name || me.user.email;
  if (!d) {
    return html`<main id="main" class="page"><h1>Hello, ${name}</h1>
      ${error ? html`<${ErrorText} error=${error} />` : html`<div class="stats skeleton-row" aria-busy="true"></div>`}</main>`;
  }
  const last = d.recentSyncs.find((s) => s.success);
  const first = d.recentSyncs.length === 0;
  return html`<main id="main" class="page dashboard">
    <h1>Hello, ${name}</h1>
    <p class="muted last-sync">${last
      ? html`Last synced <time datetime=${last.syncedAt} title=${fullDate(last.syncedAt)}>${relTime(last.syncedAt)}</time>`
      : 'Not synced yet'}</p>
    <${SyncCard} first=${first} totalBefore=${d.counts.total} onImported=${imported} />
    <${Pending} initial=${pending} onProgress=${load} />
    ${!first && html`<section class="stats" aria-label="Your library in numbers">
      <${Stat} label="in your library" value=${num(d.counts.library)} />
      <${Stat} label="on your wishlist" value=${num(d.counts.wishlist)} />
      <${Stat} label="finished" value=${num(d.progress.finished)} />
      <${Stat} label="in progress" value=${num(d.progress.inProgress)} />
      <${Stat} label="hours of listening" value=${num(d.listeningHours)} />
    </section>
    <section class="card" aria-labelledby="tops-h"><h2 id="tops-h">Most in your library</h2>
      <div class="tops-grid">
        <${Tops} title="Authors" items=${d.topAuthors} param="author" />
        <${Tops} title="Narrators" items=${d.topNarrators} param="narrator" />
        <${Tops} title="Series" items=${d.topSeries} param="series" />
      </div>
    </section>`}
    ${!first && html`<section class="card" aria-labelledby="hist-h"><h2 id="hist-h">Recent syncs</h2>
      <ul class="syncs">${d.recentSyncs.map((s) => html`<${SyncRow} key=${s.id} s=${s} />`)}</ul></section>`}
  </main>`;
}
