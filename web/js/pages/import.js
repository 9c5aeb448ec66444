// /import: a library file (the extension's download, an Audible API page, audible-cli,
// Libation or Audible Library Extractor exports; gzip too). Choosing or dropping a file runs
// POST /api/import?dryRun=1, the whole import rolled back, to show the recognised format
// and what the import would do; "Import" then sends the same file for real and shows the
// result with its warnings.
import { html, useState, useEffect, useRef } from '../html.js';
import { upload, query } from '../api.js';
import { ErrorText, num, plural, setTitle } from '../ui.js';

const FORMATS = {
  'audible-api': 'Audible API page', 'audible-cli': 'audible-cli export', libation: 'Libation export',
  ale: 'Audible Library Extractor export', extension: 'shelfsync extension file',
};
const SOURCES = [['auto', 'What the file says'], ['LIBRARY', 'Library'], ['WISHLIST', 'Wishlist']];

// "12 titles · 3 new to the catalog · 10 library · 2 wishlist · 1 removed".
export function counts(r) {
  return [plural(r.imported, 'title'), `${num(r.newToCatalog)} new to the catalog`,
    `${num(r.libraryCount)} library`, `${num(r.wishlistCount)} wishlist`, `${num(r.removed)} removed`].join(' · ');
}

function Outcome({ r, preview }) {
  const covers = (r.covers || []).map((s) => s.toLowerCase()).join(' and ');
  return html`<div class=${'outcome ' + (preview ? 'preview' : 'done')}>
    <p class=${preview ? '' : 'success'}>${preview ? 'Recognised' : 'Imported'}: <strong class="format">${FORMATS[r.format] || r.format}</strong></p>
    <p class="counts">${counts(r)}</p>
    ${covers && html`<p class="muted small">This file ${preview ? 'replaces' : 'replaced'} your ${covers}; your other titles ${preview ? 'stay' : 'stayed'} as they are.</p>`}
    ${r.warnings.length > 0 && html`<details class="warnings-box" open=${r.warnings.length <= 5}>
      <summary>${plural(r.warnings.length, 'warning')}</summary>
      <ul class="warnings">${r.warnings.map((w) => html`<li>${w}</li>`)}</ul></details>`}
  </div>`;
}

export default function Import() {
  const [file, setFile] = useState(null);
  const [source, setSource] = useState('auto');
  const [phase, setPhase] = useState('idle');       // idle | checking | ready | importing | done
  const [preview, setPreview] = useState(null);
  const [result, setResult] = useState(null);
  const [error, setError] = useState(null);
  const [over, setOver] = useState(false);
  const input = useRef(null);
  useEffect(() => { setTitle('Import a file'); }, []);

  async function check(f, src) {
    setFile(f); setPreview(null); setResult(null); setError(null);
    if (!f) { setPhase('idle'); return; }
    setPhase('checking');
    try {
      setPreview(await upload('/api/import' + query({ source: src, dryRun: 1 }), f));
      setPhase('ready');
    } catch (err) { setError(err); setPhase('idle'); }
  }

  async function commit() {
    setPhase('importing'); setError(null);
    try {
      setResult(await upload('/api/import' + query({ source }), file));
      setPhase('done');
    } catch (err) { setError(err); setPhase('ready'); }
  }

  function dropped(e) {
    e.preventDefault(); setOver(false);
    const f = e.dataTransfer && e.dataTransfer.files[0];
    if (f) check(f, source);
  }

  const busy = phase === 'checking' || phase === 'importing';
  return html`<main id="main" class="page narrow import">
    <h1>Import a file</h1>
    <p>Bring in a library you already keep elsewhere: the file the extension downloads, an Audible API
      library or wishlist page, or an export from audible-cli, Libation or Audible Library Extractor
      (JSON, CSV or TSV, gzipped or not). Nothing changes until you press Import.</p>
    <section class="card" aria-labelledby="file-h"><h2 id="file-h">Your file</h2>
      <div class=${'dropzone' + (over ? ' over' : '')} onDragOver=${(e) => { e.preventDefault(); setOver(true); }}
        onDragLeave=${() => setOver(false)} onDrop=${dropped}>
        <p>Drop the file here, or</p>
        <label class="btn" for="import-file">Choose a file</label>
        <input id="import-file" class="sr-only" type="file" ref=${input}
          onChange=${(e) => check(e.target.files[0] || null, source)} />
        ${file && html`<p class="muted small file-name">${file.name} (${num(Math.ceil(file.size / 1024))} KB)</p>`}
      </div>
      <label for="import-source">Import it as</label>
      <select id="import-source" value=${source} disabled=${busy}
        onChange=${(e) => { setSource(e.target.value); if (file) check(file, e.target.value); }}>
        ${SOURCES.map(([v, label]) => html`<option value=${v}>${label}</option>`)}
      </select>
    </section>
    <section class="card" aria-labelledby="what-h" aria-busy=${busy ? 'true' : 'false'}>
      <h2 id="what-h">${phase === 'done' ? 'Done' : 'What it will do'}</h2>
      <div aria-live="polite">
        ${phase === 'idle' && !error && html`<p class="muted">Choose a file to see what it holds.</p>`}
        ${phase === 'checking' && html`<p class="waiting"><span class="spinner" aria-hidden="true"></span> Reading the file…</p>`}
        ${phase === 'importing' && html`<p class="waiting"><span class="spinner" aria-hidden="true"></span> Importing…</p>`}
        ${preview && (phase === 'ready' || phase === 'importing') && html`<${Outcome} r=${preview} preview=${true} />`}
        ${result && html`<${Outcome} r=${result} preview=${false} />
          <p><a href="/library">See your library</a></p>`}
        <${ErrorText} error=${error} />
      </div>
      ${phase === 'ready' && html`<div class="actions">
        <button type="button" class="btn primary big" onClick=${commit}>Import ${plural(preview.imported, 'title')}</button></div>`}
    </section>
  </main>`;
}
