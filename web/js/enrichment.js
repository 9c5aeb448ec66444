// Title details fetched in the background (issue 12): the "Fetching details for N titles…"
// line of the dashboard and the library, and the library's Add a title by ASIN.
import { html, useState, useEffect, useRef } from './html.js';
import { get, post } from './api.js';
import { Cover, ErrorText, byline, duration, plural } from './ui.js';

const POLL_MS = 4000;

// While some of the user's titles wait for details (GET /api/me's enrichment.pending), says
// so and asks again every few seconds; onProgress() runs whenever the number goes down, so
// the page can redraw with the covers that arrived.
export function Pending({ initial, onProgress }) {
  const [pending, setPending] = useState(initial || 0);
  const timer = useRef(null);
  const last = useRef(initial || 0);
  useEffect(() => { setPending(initial || 0); last.current = initial || 0; }, [initial]);
  useEffect(() => {
    if (!pending) return undefined;
    timer.current = setTimeout(async () => {
      try {
        const me = await get('/api/me');
        const n = (me.enrichment && me.enrichment.pending) || 0;
        if (n < last.current && onProgress) onProgress();
        last.current = n;
        setPending(n);
      } catch (e) { setPending(0); }
    }, POLL_MS);
    return () => clearTimeout(timer.current);
  }, [pending]);
  return html`<p class="pending muted" aria-live="polite">${pending > 0
    ? html`<span class="spinner" aria-hidden="true"></span> Fetching details for ${plural(pending, 'title')}…`
    : ''}</p>`;
}

// Add a title by ASIN: look it up (the catalog, else the metadata provider), show it, then
// add it to the library as a manual entry. onAdded(entry) after the add.
export function AddByAsin({ onAdded }) {
  const [asin, setAsin] = useState('');
  const [preview, setPreview] = useState(null);
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const [added, setAdded] = useState('');

  async function lookUp(e) {
    e.preventDefault();
    setError(null);
    setPreview(null);
    setAdded('');
    setBusy(true);
    try {
      setPreview(await get('/api/lookup/' + encodeURIComponent(asin.trim())));
    } catch (err) { setError(err); }
    setBusy(false);
  }

  async function add() {
    setError(null);
    setBusy(true);
    try {
      const entry = await post('/api/library', { asin: preview.asin });
      setAdded(`Added “${entry.title.title}” to your library.`);
      setPreview(null);
      setAsin('');
      if (onAdded) onAdded(entry);
    } catch (err) { setError(err); }
    setBusy(false);
  }

  const t = preview;
  return html`<details class="add-asin">
    <summary>Add a title by ASIN</summary>
    <form class="inline-form" onSubmit=${lookUp}>
      <label for="add-asin">ASIN</label>
      <p class="muted hint" id="add-asin-hint">The 10-character id in an Audible link, e.g. B08G9PRS1K.</p>
      <div class="input-row">
        <input id="add-asin" name="asin" value=${asin} autocomplete="off" spellcheck="false"
          aria-describedby=${'add-asin-hint' + (error ? ' add-asin-error' : '')} aria-invalid=${error ? 'true' : undefined}
          onInput=${(e) => setAsin(e.target.value)} required />
        <button type="submit" class="btn" disabled=${busy}>Look up</button>
      </div>
    </form>
    <div aria-live="polite">
      ${t && html`<div class="asin-preview">
        <${Cover} asin=${t.asin} title=${t.title} url=${t.coverImageUrl} size="small" />
        <div class="row-main">
          <span class="row-title">${t.title}</span>
          <span class="row-sub">${[byline(t.authors), duration(t.duration)].filter(Boolean).join(' · ')}</span>
        </div>
        <button type="button" class="btn primary" onClick=${add} disabled=${busy}>Add to library</button>
      </div>`}
      <p class="success">${added}</p>
    </div>
    <${ErrorText} error=${error} id="add-asin-error" />
  </details>`;
}
