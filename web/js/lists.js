// What the list pages share: the visibility badge and picker, the cover strip, the share
// button, the search picker over the library API, saving with If-Match (and the conflict
// it may meet), SortableJS bound to Preact, and a live region for keyboard moves.
import { html, useState, useEffect, useLayoutEffect, useRef } from './html.js';
import { get, patchIf, query as qs, ApiError } from './api.js';
import { Cover, ErrorText, byline, plural, relTime, setTitle } from './ui.js';
import Sortable from '../vendor/sortable.esm.js';

export const VISIBILITIES = [
  ['PRIVATE', 'Private', 'only you'],
  ['UNLISTED', 'Unlisted', 'anyone with the link'],
  ['PUBLIC', 'Public', 'anyone, and on your profile'],
];
const VIS_NAME = Object.fromEntries(VISIBILITIES.map(([v, n]) => [v, n]));

export function Badge({ visibility }) {
  return html`<span class=${'badge ' + visibility.toLowerCase()}>${VIS_NAME[visibility] || visibility}</span>`;
}

export function VisibilitySelect({ value, onChange, id, disabled }) {
  return html`<select id=${id} value=${value} disabled=${disabled} onChange=${(e) => onChange(e.target.value)}>
    ${VISIBILITIES.map(([v, n, who]) => html`<option value=${v}>${n} — ${who}</option>`)}</select>`;
}

export function CoverStrip({ covers, count }) {
  const shown = (covers || []).slice(0, 4);
  return html`<div class="strip" aria-hidden=${shown.length ? undefined : 'true'}>
    ${shown.map((c) => html`<${Cover} asin=${c.asin} title=${c.title} url=${c.coverImageUrl} />`)}
    ${Array.from({ length: 4 - shown.length }, () => html`<div class="strip-empty"></div>`)}
    ${count === 0 && html`<span class="strip-note">Empty</span>`}
  </div>`;
}

// Copies the page's link; offers the system share sheet where the browser has one.
export function ShareButton({ title, visibility }) {
  const [said, setSaid] = useState('');
  if (visibility === 'PRIVATE') {
    return html`<p class="muted small share-hint">Private: make it unlisted or public to share it.</p>`;
  }
  const url = location.origin + location.pathname;
  async function copy() {
    try {
      await navigator.clipboard.writeText(url);
      setSaid('Link copied');
    } catch (e) {
      setSaid('Copy this link: ' + url);
    }
  }
  async function share() {
    try { await navigator.share({ title, url }); } catch (e) { /* closed: nothing to say */ }
  }
  return html`<div class="share">
    <button type="button" class="btn" onClick=${copy}>Copy link</button>
    ${typeof navigator.share === 'function' && html`<button type="button" class="btn" onClick=${share}>Share…</button>`}
    <span class="success" role="status">${said}</span>
  </div>`;
}

// The search picker: the library API's q, debounced; pick(entry) adds a title. `held`: the
// ASINs already there (shown as added).
export function Picker({ held, pick, label = 'Add titles' }) {
  const [q, setQ] = useState('');
  const [res, setRes] = useState(null);
  const [error, setError] = useState(null);
  useEffect(() => {
    if (!q.trim()) { setRes(null); return undefined; }
    let live = true;
    const t = setTimeout(() => {
      get('/api/library' + qs({ q: q.trim(), limit: 8 })).then((r) => { if (live) { setRes(r); setError(null); } },
        (e) => { if (live) setError(e); });
    }, 250);
    return () => { live = false; clearTimeout(t); };
  }, [q]);
  return html`<section class="picker card" aria-labelledby="picker-h">
    <h2 id="picker-h">${label}</h2>
    <label class="picker-search"><span class="sr-only">Search your library</span>
      <input type="search" placeholder="Search your library by title, author, narrator…" value=${q}
        onInput=${(e) => setQ(e.target.value)} autocomplete="off" /></label>
    <${ErrorText} error=${error} />
    <p class="muted small" aria-live="polite">${res ? (res.total === 0 ? 'Nothing in your library matches.'
      : `${res.items.length} of ${res.total} shown`) : ''}</p>
    ${res && res.items.length > 0 && html`<ul class="picks">${res.items.map((e) => {
      const has = held.has(e.asin);
      return html`<li class="pick">
        <${Cover} asin=${e.asin} title=${e.title.title} url=${e.title.coverImageUrl} size="small" />
        <span class="pick-main"><span class="pick-title">${e.title.title}</span>
          <span class="muted small">${byline(e.title.authors)}</span></span>
        <button type="button" class="btn small" disabled=${has} onClick=${() => pick(e)}
          aria-label=${(has ? 'Added: ' : 'Add ') + e.title.title}>${has ? 'Added' : 'Add'}</button>
      </li>`;
    })}</ul>`}
  </section>`;
}

// Saving with the version read. save(body) PATCHes; a 412 becomes `conflict` (nothing is
// lost: the edit stays on the page until the listener reloads or overwrites).
export function useSaver(path, version, onSaved) {
  const [state, setState] = useState({ saving: false, error: null, conflict: false });
  async function save(body, asVersion = version) {
    setState({ saving: true, error: null, conflict: false });
    try {
      const saved = await patchIf(path, body, asVersion);
      setState({ saving: false, error: null, conflict: false });
      onSaved(saved);
    } catch (e) {
      if (e instanceof ApiError && e.status === 412) setState({ saving: false, error: null, conflict: true });
      else setState({ saving: false, error: e, conflict: false });
    }
  }
  // Overwrite: the current version, then the same body again.
  async function overwrite(body) {
    try {
      const now = await get(path);
      await save(body, now.version);
    } catch (e) { setState({ saving: false, error: e, conflict: true }); }
  }
  const reset = () => setState({ saving: false, error: null, conflict: false });
  return { ...state, save, overwrite, reset };
}

export function Conflict({ what, reload, overwrite }) {
  return html`<div class="conflict" role="alert">
    <p><strong>This ${what} changed elsewhere</strong> (another tab or device) since you opened it. Your changes
      are still here: reload to see the other version (yours are dropped), or overwrite it with yours.</p>
    <div class="actions-row">
      <button type="button" class="btn" onClick=${reload}>Reload</button>
      <button type="button" class="btn primary" onClick=${overwrite}>Overwrite with mine</button>
    </div>
  </div>`;
}

// Binds SortableJS to a container whose children are keyed by data-key. SortableJS moves
// nodes itself; Preact must stay the DOM's only author, so each move is put back and
// reported: onMove(key, fromGroup, toGroup, newIndex), the container's data-group naming
// its group. Returns the ref for the container.
export function useSortable(onMove, group) {
  const ref = useRef(null);
  const cb = useRef(onMove);
  cb.current = onMove;
  useEffect(() => {
    const s = Sortable.create(ref.current, {
      group, animation: 150, draggable: '[data-key]', handle: '.drag', ghostClass: 'ghost', forceFallback: true,
      onEnd(evt) {
        const { item, from, to, oldIndex, newIndex } = evt;
        if (from === to && oldIndex === newIndex) return;
        to.removeChild(item);
        from.insertBefore(item, from.children[oldIndex] || null);
        cb.current(item.dataset.key, from.dataset.group, to.dataset.group, newIndex);
      },
    });
    return () => s.destroy();
  }, []);
  return ref;
}

// A live region (role=status) and a way to say something in it.
export function useAnnouncer() {
  const [text, setText] = useState('');
  const el = html`<p class="sr-only" role="status" aria-live="polite">${text}</p>`;
  return [el, setText];
}

// After the next render, focuses the first element found by a list of selectors (a moved
// item's button; another of its buttons when that one is now disabled).
export function useFocusAfter() {
  const [sels, setSels] = useState(null);
  // Layout effect: the focus moves before the browser paints, never resting on <body>.
  useLayoutEffect(() => {
    if (!sels) return;
    for (const sel of sels) {
      const el = document.querySelector(sel);
      if (el) { el.focus(); break; }
    }
    setSels(null);
  }, [sels]);
  return (...list) => setSels(list);
}

export function Gone({ inLibrary }) {
  return inLibrary === false ? html`<span class="gone-note">no longer in your library</span>` : null;
}

// The head of a list or tier list as a visitor sees it: title, owner, description, count.
export function ReadHead({ list, count }) {
  const owner = list.owner && list.owner.username;
  return html`<header class="list-head">
    <div><h1>${list.title}</h1>
      ${owner && html`<p class="by">by <a href=${'/u/' + owner}>@${owner}</a></p>`}
      ${list.description && html`<p class="lede">${list.description}</p>`}
      <p class="muted small">${plural(count, 'title')} · updated ${relTime(list.updatedAt)}</p></div>
    <${ShareButton} title=${list.title} visibility=${list.visibility} />
  </header>`;
}

export function NotFound({ what }) {
  return html`<main id="main" class="page narrow"><h1>${what} not found</h1>
    <p>There is no ${what.toLowerCase()} at this address, or its owner keeps it private.</p>
    <p><a href="/">Go to shelfsync</a></p></main>`;
}

// Loads path: {data, setData, error, reload}; reload() answers the fresh data.
function useListData(path) {
  const [data, setData] = useState(null);
  const [error, setError] = useState(null);
  const reload = () => get(path).then((d) => { setData(d); setError(null); return d; }, setError);
  useEffect(() => { reload(); }, [path]);
  return { data, setData, error, reload };
}

// The page of one list or tier list (API path): loading, a 404 page (unknown, or PRIVATE
// and not the caller's), the Editor for its owner, else the ReadView. Both get `list`;
// the Editor also reload() and setList(saved).
export function OneList({ path, what, Editor, ReadView }) {
  const { data, setData, error, reload } = useListData(path);
  useEffect(() => { setTitle(data ? data.title : what); }, [data && data.title]);
  if (error) {
    if (error instanceof ApiError && error.status === 404) return html`<${NotFound} what=${what} />`;
    return html`<main id="main" class="page narrow"><h1>Could not load this ${what.toLowerCase()}</h1><${ErrorText} error=${error} /></main>`;
  }
  if (!data) {
    return html`<main id="main" class="page" aria-busy="true"><h1 class="sr-only">Loading ${what.toLowerCase()}</h1><div class="title-skeleton"></div></main>`;
  }
  return data.isOwner ? html`<${Editor} list=${data} reload=${reload} setList=${setData} />` : html`<${ReadView} list=${data} />`;
}
